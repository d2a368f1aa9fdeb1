"""``neurflow-graph layers --model M``: every named module of a model with its output shape.

The names are what ``--layers`` takes (``named_modules()`` paths); the shapes come from one
forward pass on a dummy ``(1, 3, S, S)`` input, so a custom model's layers can be chosen without
reading its code. Layers the registry analyses by default are marked with ``*``.
"""

from __future__ import annotations

import click

from neurflow_graph.cli.options import device_option, trust_pickle_option


@click.command("layers")
@click.option("--model", "model", required=True,
              help="Registry name, package.module:factory or path/to/file.py:factory.")
@click.option("--weights", default=None, help="As for extract (the shapes do not depend on them).")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Side of the dummy input (default: the model's INPUT_SIZE, else 224).")
@trust_pickle_option
@device_option
def command(model: str, weights: str | None, input_size: int | None, trust_pickle: bool, device: str | None) -> None:
    """List every named module of --model M (name, type, output shape on one dummy input)."""
    from neurflow_graph.models.registry import (
        DEMO_NAME, LoadedModel, get_spec, layer_shapes, load_model, resolve_device,
    )

    if model.strip() == DEMO_NAME and weights is None:  # shapes need no weights: do not train the demo model
        from neurflow_graph.models.demo import build_demo_cnn

        loaded = LoadedModel(module=build_demo_cnn().eval().to(resolve_device(device)), spec=get_spec(DEMO_NAME),
                             device=resolve_device(device), weights_sha256=None)
    else:
        loaded = load_model(name=model, weights=weights, input_size=input_size, device=device,
                            trust_pickle=trust_pickle, require_layers=False)
    infos = layer_shapes(loaded, input_size=input_size)
    analysed = set(loaded.spec.layers)
    width = max((len(i.name) + 2 * i.depth for i in infos), default=4)
    kind_width = max((len(i.kind) for i in infos), default=4)
    side = input_size or loaded.spec.input_size or 224
    click.echo(f"{loaded.spec.name}: {len(infos)} named modules, output shapes on a (1, 3, {side}, {side}) input"
               + ("; * = analysed by default" if analysed else ""))
    for i in infos:
        mark = "*" if i.name in analysed else " "
        click.echo(f"{mark} {'  ' * i.depth + i.name:<{width}}  {i.kind:<{kind_width}}  {i.output}")
    click.echo("pass --layers with names from the second column, top -> bottom, the first being the logit "
               "layer (see docs/models-and-images.md)" if not analysed else
               f"default --layers: {','.join(loaded.spec.layers)}")
