"""Published checkpoints in and out of strata's models: each layout's name map and layout changes,
written as `Link`s between a strata variable and a tensor of the published state dict, from
which both directions follow (`links.to_strata`, `links.from_strata`).

    converted = torchvision_layout.resnet(state_dict)      # {name: (O, I, kh, kw) ndarray, ...}
    model = arch.build(converted.model)                    # the fields the checkpoint needs
    logits = model.apply(converted.variables, images_nhwc)

The maps are built from the checkpoint's own structure (stage and block counts, widths, patch
size, depth), so a depth or width no test saw converts too. Reading files (torch, safetensors)
and the command line are `train.convert`'s; this package takes and gives NumPy arrays only.
"""
