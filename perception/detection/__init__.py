"""Two-stage object detection (Faster R-CNN) with MCAR domain adaptation; see ``faster_rcnn`` and
``adaptation``."""
