"""The page at `/` of the HTTP service: pick a user, see their recent history and the recommendations as tiles
(posters when the dataset has images) with explanation bars. Plain HTML + fetch() against the service's own API."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
 h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
 .row { display: flex; flex-wrap: wrap; gap: 12px; }
 .tile { width: 150px; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 6px; font-size: .8em; }
 .tile img, .tile .noimg { width: 150px; height: 210px; object-fit: cover; border-radius: 4px; background: #eee;
   display: flex; align-items: center; justify-content: center; color: #999; }
 .title { font-weight: 600; margin: 4px 0 2px; min-height: 2.4em; }
 .bar { display: flex; height: 8px; border-radius: 4px; overflow: hidden; margin: 3px 0; }
 .id { background: #8e8e8e; } .text { background: #2f7ed8; } .image { background: #e8a33d; } .bias { background: #bbb; }
 .why { color: #555; } .error { color: #b00; } .legend span { padding: 0 6px; margin-right: 6px; color: #fff; }
 form { display: flex; gap: 8px; align-items: center; }
</style></head>
<body>
<h1>__TITLE__</h1>
<form id="ask"><label>user <input id="user" list="users" size="8"></label><datalist id="users"></datalist>
 <label>k <input id="k" type="number" value="10" min="1" max="50" style="width:4em"></label>
 <button type="submit">recommend</button> <button type="button" id="random">random user</button>
 <span class="legend"><span class="id">id</span><span class="text">text</span><span class="image">image</span></span>
</form>
<div id="error" class="error"></div>
<h2 id="history-title"></h2><div id="history" class="row"></div>
<h2 id="recs-title"></h2><div id="recs" class="row"></div>
<script>
const $ = (id) => document.getElementById(id);
let known = [];
function esc(s) { return String(s ?? "").replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function poster(item) {
  return item.image ? `<img src="${item.image}" alt="">` : `<div class="noimg">no image</div>`;
}
function bars(shares) {
  if (!shares) return "";
  return `<div class="bar">` + Object.entries(shares).map(([s, v]) =>
    `<div class="${esc(s)}" style="width:${(100 * v).toFixed(1)}%" title="${esc(s)} ${(100 * v).toFixed(0)}%"></div>`).join("") + `</div>`;
}
function why(item) {
  const near = item.neighbours || {};
  return Object.entries(near).map(([m, list]) => list.length ?
    `<div class="why">${esc(m)}: like ${esc(list[0].title || list[0].item_id)}</div>` : "").join("");
}
async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}
async function show(user) {
  $("error").textContent = "";
  try {
    const k = $("k").value || 10;
    const [history, recs] = await Promise.all([
      getJSON(`/users/${encodeURIComponent(user)}/history?limit=10`),
      getJSON(`/recommend?user=${encodeURIComponent(user)}&k=${k}&explain=1`)]);
    $("history-title").textContent = `User ${user}: the 10 most recent of ${history.length} items`;
    $("history").innerHTML = history.items.map(i =>
      `<div class="tile">${poster(i)}<div class="title">${esc(i.title || i.item_id)}</div></div>`).join("");
    $("recs-title").textContent = `Recommended (seen items excluded)`;
    $("recs").innerHTML = recs.items.map(i =>
      `<div class="tile">${poster(i)}<div class="title">${i.rank}. ${esc(i.title || i.item_id)}</div>` +
      `score ${i.score.toFixed(3)}${bars(i.shares)}${why(i)}</div>`).join("");
  } catch (e) { $("error").textContent = e.message; }
}
$("ask").addEventListener("submit", (e) => { e.preventDefault(); show($("user").value.trim()); });
$("random").addEventListener("click", () => {
  if (!known.length) return;
  const user = known[Math.floor(Math.random() * known.length)];
  $("user").value = user; show(user);
});
getJSON("/users?limit=500").then(body => {
  known = body.users;
  $("users").innerHTML = known.map(u => `<option value="${esc(u)}">`).join("");
  const start = new URLSearchParams(location.search).get("user") || known[0];
  if (start) { $("user").value = start; show(start); }
});
</script></body></html>
"""
