"""ColorGAN nodes for ComfyUI: copy or clone this folder into ``ComfyUI/custom_nodes/``.

The nodes run the installed ``colorgan`` package (``pip install -r requirements.txt`` in ComfyUI's
Python); nothing of ColorGAN is vendored here.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
