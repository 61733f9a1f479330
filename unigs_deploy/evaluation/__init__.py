"""`unigs-eval`: score predictions against COCO-format ground truth (panoptic PQ/SQ/RQ at dataset
level as panopticapi computes it, class-agnostic mask AP via pycocotools, refer mIoU/cIoU), and
run an engine over a dataset with resume and sharding."""
