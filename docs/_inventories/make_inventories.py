"""Write the small intersphinx inventories in this folder (``python docs/_inventories/make_inventories.py``).

The docs are built offline (CI and the project's machines reach PyPI only), so
``docs/conf.py`` points intersphinx at these local files instead of fetching
each project's ``objects.inv``. Each holds only the objects pyrobnn's pages and
docstrings refer to, with the page on the project's real site where the object
is documented; the links in the built site go to those sites.

To add an object: add a line to ``INVENTORIES`` below (the object's name as
Sphinx resolves it, its role, and its address relative to the project's base
URL, which ``docs/conf.py`` holds), run this script, and commit the changed
``.inv`` file with it. ``make docs`` lists any reference that still does not
resolve. To check an address, open the base URL joined with it.

An object's name must be the one a reference uses. Signatures refer to classes
by the module they are defined in (``torch.nn.modules.module.Module``), so a
class that a project documents under a shorter public name is listed under both
names, with the same address.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: project -> (version, {name: (domain:role, address relative to the project's base URL)})
INVENTORIES: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "python": (
        "3",
        {
            "object": ("py:class", "library/functions.html#object"),
            "int": ("py:class", "library/functions.html#int"),
            "float": ("py:class", "library/functions.html#float"),
            "bool": ("py:class", "library/functions.html#bool"),
            "str": ("py:class", "library/stdtypes.html#str"),
            "list": ("py:class", "library/stdtypes.html#list"),
            "tuple": ("py:class", "library/stdtypes.html#tuple"),
            "dict": ("py:class", "library/stdtypes.html#dict"),
            "None": ("py:data", "library/constants.html#None"),
            "UserWarning": ("py:exception", "library/exceptions.html#UserWarning"),
            "RuntimeError": ("py:exception", "library/exceptions.html#RuntimeError"),
            "ValueError": ("py:exception", "library/exceptions.html#ValueError"),
            "TypeError": ("py:exception", "library/exceptions.html#TypeError"),
            "collections.abc.Callable": ("py:class", "library/collections.abc.html#collections.abc.Callable"),
            "collections.abc.Iterable": ("py:class", "library/collections.abc.html#collections.abc.Iterable"),
            "collections.abc.Iterator": ("py:class", "library/collections.abc.html#collections.abc.Iterator"),
            "collections.abc.Mapping": ("py:class", "library/collections.abc.html#collections.abc.Mapping"),
            "collections.abc.Sequence": ("py:class", "library/collections.abc.html#collections.abc.Sequence"),
            "typing.Any": ("py:data", "library/typing.html#typing.Any"),
            "os.PathLike": ("py:class", "library/os.html#os.PathLike"),
            "pathlib.Path": ("py:class", "library/pathlib.html#pathlib.Path"),
            "argparse.ArgumentParser": ("py:class", "library/argparse.html#argparse.ArgumentParser"),
        },
    ),
    "numpy": (
        "stable",
        {
            "numpy.ndarray": ("py:class", "reference/generated/numpy.ndarray.html#numpy.ndarray"),
        },
    ),
    "torch": (
        "stable",
        {
            "torch.Tensor": ("py:class", "tensors.html#torch.Tensor"),
            "torch.Size": ("py:class", "size.html#torch.Size"),
            "torch.device": ("py:class", "tensor_attributes.html#torch.device"),
            "torch.dtype": ("py:class", "tensor_attributes.html#torch.dtype"),
            "torch.Generator": ("py:class", "generated/torch.Generator.html#torch.Generator"),
            "torch.load": ("py:function", "generated/torch.load.html#torch.load"),
            "torch.nn.Module": ("py:class", "generated/torch.nn.Module.html#torch.nn.Module"),
            "torch.nn.modules.module.Module": ("py:class", "generated/torch.nn.Module.html#torch.nn.Module"),
            "torch.nn.parallel.DistributedDataParallel": (
                "py:class",
                "generated/torch.nn.parallel.DistributedDataParallel.html#torch.nn.parallel.DistributedDataParallel",
            ),
            "torch.optim.Optimizer": ("py:class", "optim.html#torch.optim.Optimizer"),
            "torch.optim.optimizer.Optimizer": ("py:class", "optim.html#torch.optim.Optimizer"),
            "torch.optim.lr_scheduler.LRScheduler": (
                "py:class",
                "generated/torch.optim.lr_scheduler.LRScheduler.html#torch.optim.lr_scheduler.LRScheduler",
            ),
            "torch.distributions.Distribution": (
                "py:class",
                "distributions.html#torch.distributions.distribution.Distribution",
            ),
            "torch.distributions.distribution.Distribution": (
                "py:class",
                "distributions.html#torch.distributions.distribution.Distribution",
            ),
            "torch.utils.data.DataLoader": ("py:class", "data.html#torch.utils.data.DataLoader"),
            "torch.utils.data.distributed.DistributedSampler": (
                "py:class",
                "data.html#torch.utils.data.distributed.DistributedSampler",
            ),
            "torch.func.vmap": ("py:function", "generated/torch.func.vmap.html#torch.func.vmap"),
            "torch.func.functional_call": (
                "py:function",
                "generated/torch.func.functional_call.html#torch.func.functional_call",
            ),
        },
    ),
    "pyro": (
        "stable",
        {
            "pyro.sample": ("py:function", "primitives.html#pyro.primitives.sample"),
            "pyro.plate": ("py:class", "primitives.html#pyro.primitives.plate"),
            "pyro.infer.Trace_ELBO": ("py:class", "inference_algos.html#pyro.infer.trace_elbo.Trace_ELBO"),
            "pyro.infer.trace_elbo.Trace_ELBO": ("py:class", "inference_algos.html#pyro.infer.trace_elbo.Trace_ELBO"),
            "pyro.infer.TraceMeanField_ELBO": (
                "py:class",
                "inference_algos.html#pyro.infer.trace_mean_field_elbo.TraceMeanField_ELBO",
            ),
            "pyro.infer.trace_mean_field_elbo.TraceMeanField_ELBO": (
                "py:class",
                "inference_algos.html#pyro.infer.trace_mean_field_elbo.TraceMeanField_ELBO",
            ),
            "pyro.infer.autoguide.AutoMultivariateNormal": (
                "py:class",
                "infer.autoguide.html#pyro.infer.autoguide.AutoMultivariateNormal",
            ),
            "pyro.infer.autoguide.AutoLowRankMultivariateNormal": (
                "py:class",
                "infer.autoguide.html#pyro.infer.autoguide.AutoLowRankMultivariateNormal",
            ),
            "pyro.distributions.TorchDistribution": (
                "py:class",
                "distributions.html#pyro.distributions.TorchDistribution",
            ),
            "pyro.distributions.torch_distribution.TorchDistribution": (
                "py:class",
                "distributions.html#pyro.distributions.TorchDistribution",
            ),
            "pyro.distributions.transforms": ("py:module", "distributions.html#transforms"),
        },
    ),
    "arviz": (
        "stable",
        {
            name: ("py:class" if name == "arviz.InferenceData" else "py:function", f"api/generated/{name}.html")
            for name in (
                "arviz.InferenceData",
                "arviz.from_dict",
                "arviz.summary",
                "arviz.loo",
                "arviz.compare",
                "arviz.psislw",
                "arviz.rhat",
                "arviz.plot_ppc",
                "arviz.plot_khat",
            )
        },
    ),
}


def write(path: Path, project: str, version: str, objects: dict[str, tuple[str, str]]) -> None:
    """Write one inventory in Sphinx's version-2 format (a text header, then zlib-compressed lines)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    # name domain:role priority address display-name ("-": the name itself)
    lines = "".join(f"{name} {role} 1 {address} -\n" for name, (role, address) in sorted(objects.items()))
    path.write_bytes(header.encode() + zlib.compress(lines.encode()))


def main() -> None:
    for project, (version, objects) in INVENTORIES.items():
        path = HERE / f"{project}.inv"
        write(path, project, version, objects)
        print(f"wrote {path.relative_to(HERE.parent.parent)}: {len(objects)} objects")


if __name__ == "__main__":
    main()
