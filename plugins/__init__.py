"""Host-application plugins for varedit (installed as ``varedit_plugins``).

* :mod:`varedit_plugins.remove`: object removal, the first-party plugin of the ``varedit.plugins``
  entry-point group (``varedit remove``, task ``remove``; see :mod:`varedit.extensions`).
* :mod:`varedit_plugins.comfyui`: the ComfyUI node pack.

Plugins build on varedit's public Python API only.
"""
