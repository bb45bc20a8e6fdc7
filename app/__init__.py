"""wanwu (万物识别): an image-classification service."""
