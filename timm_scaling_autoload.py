"""Start-up hook: registers timm-scaling's models in timm's registry right after ``import timm``.

timm has no plugin discovery, so the wheel ships ``timm_scaling_autoload.pth``, which imports
this module at interpreter start. It imports neither torch nor timm: it puts a finder in front
of ``sys.meta_path`` that waits for the first ``import timm``, lets timm load as usual and then
imports ``timm_scaling.models``, which registers the variants. It never raises: a broken hook
must not break Python. ``TIMM_SCALING_AUTOLOAD=0`` switches the start-up hook off
(``import timm_scaling`` still registers).
"""

import os
import sys

ENV_VAR = "TIMM_SCALING_AUTOLOAD"
_MODELS_MODULE = "timm_scaling.models"


def _register() -> None:
    try:
        __import__(_MODELS_MODULE)
    except Exception as err:  # a broken plugin must not break `import timm`
        import warnings

        warnings.warn(
            f"timm-scaling could not register its models ({type(err).__name__}: {err}); "
            f"set {ENV_VAR}=0 to skip the hook",
            RuntimeWarning,
            stacklevel=2,
        )


class _RegisterAfterLoad:
    """Wraps timm's loader: runs it, puts it back, then registers our models."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _register()


class _TimmImportHook:
    """A meta path finder that fires once, on the first ``import timm``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        uninstall()
        try:
            import importlib.util

            spec = importlib.util.find_spec("timm")
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _RegisterAfterLoad(spec.loader)
            return spec
        except Exception:
            return None  # let the regular finders report whatever is wrong with timm


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TimmImportHook)]


def install(force: bool = False) -> None:
    """Register now if timm is loaded, else as soon as it is; ``force`` ignores the env switch."""
    try:
        if not force and os.environ.get(ENV_VAR, "1").strip() == "0":
            return
        if "timm" in sys.modules:
            _register()
        elif not any(isinstance(f, _TimmImportHook) for f in sys.meta_path):
            sys.meta_path.insert(0, _TimmImportHook())
    except Exception:
        pass  # never break interpreter start-up
