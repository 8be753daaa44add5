"""mmrecbole: multimodal recommendation on RecBole's conventions.

Exact, tested pins live in requirements.txt (installed by `make`); the ranges here are what the code needs.
"""
from setuptools import find_packages, setup

setup(
    name="mmrecbole",
    version="0.1.0",
    description="Multimodal (text + image) sequential and general recommenders, implicit baselines, "
    "a LightGBM stacker and leaderboards, on RecBole 1.2.1",
    packages=find_packages(include=["mmrecbole", "mmrecbole.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        "recbole==1.2.1",
        "torch>=2.6",
        "torchvision",
        "numpy<2",
        "pandas<3",
        "scipy<1.12",
        "setuptools<81",
        "pyyaml>=6",
        "tqdm",
        "transformers>=4.40",
        "implicit>=0.7",
        "lightgbm>=4",
        "matplotlib",
        "fastapi>=0.110",
        "uvicorn>=0.29",
    ],
    scripts=["run_recbole_mm.py"],
)
