from setuptools import find_packages, setup

setup(
    name="visionllm-hf",
    version="0.1.0",
    description="The VisionLLM family (VisionLLM v1/v2, RegionGPT, u-LLaVA) as one Hugging Face-native library",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    py_modules=["visionllm_hf_cli"],  # the command's argument parsing: light, so --help answers at once
    package_data={
        "visionllm_hf": [
            "builder/corpus.txt",
            "model_cards/template.md",
            "trainer/deepspeed/*.json",
            "evaluation/evaluate_metrics/*.py",
            "demo_model/*",
        ]
    },
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.6",
        "torchvision",  # box ops and GIoU in the decoders
        "scipy",  # Hungarian matching
        "transformers>=5.23,<6",
        "tokenizers>=0.22",
        "huggingface_hub>=1.0",
        "safetensors",
        "numpy",
        "pillow",
        "accelerate>=1.0",  # Trainer
        "peft>=0.17",  # LoRA
        "pycocotools",  # COCO masks and AP
        "pycocoevalcap",  # BLEU-4 and CIDEr
        "tqdm",
    ],
    extras_require={
        # The exact builds this project is tested with; served from local disk on the project machines.
        "torch": ["torch==2.14.1", "torchvision==0.29.1"],
        "timm": ["timm>=1.0"],
        "deepspeed": ["deepspeed"],
        "datasets": ["datasets"],
        "demo": ["scikit-image"],  # real photos for the demo
        "diffusion": ["diffusers>=0.30"],  # [GEN] / [EDIT] decoders
        "evaluate": ["evaluate", "datasets"],
        "app": ["gradio>=6,<7", "scikit-image"],  # `visionllm-hf app`: the web page and its example photos
        "video": ["av"],  # video files in `videos=` (frame lists, arrays and frame folders need nothing)
        "test": [
            "pytest>=8", "timm>=1.0", "datasets", "deepspeed", "evaluate", "scikit-image", "diffusers>=0.30", "av",
            "supervision",  # predict's results go to supervision.Detections.from_transformers unchanged (tested)
            "gradio>=6,<7", "selenium>=4.10",  # tests/test_app.py drives the page in Debian's headless chromium
        ],
    },
    entry_points={"console_scripts": ["visionllm-hf=visionllm_hf_cli:main"]},
)
