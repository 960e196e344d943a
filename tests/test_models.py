import pytest
import torch

from fashionbench.core.models import build_model, known_models, model_options, parameter_count


def linear(i, o):
    return i * o + o


def conv(cin, cout, k):
    return cin * cout * k * k + cout


def conv_bn(cin, cout):
    return cin * cout * 9 + 2 * cout


# Parameter counts worked out by hand from the write-ups' architectures (docs/writeups.md).
EXPECTED_PARAMETERS = {
    "mlp_512": linear(784, 512) + linear(512, 512) + linear(512, 10),                  # 669,706
    "mlp_64": linear(784, 64) + linear(64, 10),                                        # 50,890
    "fcn_400": linear(784, 400) + linear(400, 400) + linear(400, 10),                  # 478,410
    "cnn_small": conv(1, 16, 5) + conv(16, 32, 7) + linear(32 * 3 * 3, 10),            # 28,426
    # patch 7 -> 16 tokens of 49 pixels, dim 64; token MLP 16-64-16; channel MLP 64-128-64
    "patch_mlp": linear(49, 64) + linear(16, 64) + linear(64, 16) + linear(64, 128) + linear(128, 64) + linear(64, 10),
    "lenet5_classic": conv(1, 6, 5) + conv(6, 16, 5) + linear(400, 120) + linear(120, 84) + linear(84, 10),  # 61,706
    "lenet5_modern": conv(1, 6, 5) + conv(6, 16, 5) + linear(400, 120) + linear(120, 84) + linear(84, 10),
    "cnn_baseline": conv(1, 32, 3) + conv(32, 64, 3) + linear(2304, 600) + linear(600, 120) + linear(120, 10),  # 1,475,146
    "cnn_dropout": conv(1, 32, 3) + conv(32, 64, 3) + linear(2304, 600) + linear(600, 120) + linear(120, 10),
    # beyond the write-ups, width 32: 3x3 convs without bias, each with batch norm (2 per channel)
    "resnet_fast": conv_bn(1, 32) + 2 * conv_bn(32, 32) + conv_bn(32, 64) + 2 * conv_bn(64, 64)
    + conv_bn(64, 128) + 2 * conv_bn(128, 128) + linear(128, 10),                   # 482,154
}


def test_every_zoo_model_has_a_hand_computed_count():
    assert sorted(EXPECTED_PARAMETERS) == known_models()


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_zoo_model_parameter_count_matches_the_spec(name):
    assert parameter_count(build_model(name)) == EXPECTED_PARAMETERS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_zoo_model_maps_a_batch_of_images_to_ten_logits(name):
    assert build_model(name)(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_unknown_model_error_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*cnn_small.*mlp_512"):
        build_model("resnet")


def test_mlp_depth_and_width_change_the_layers():
    model = build_model("fcn_400", depth=3, width=100)
    assert parameter_count(model) == linear(784, 100) + 2 * linear(100, 100) + linear(100, 10)


@pytest.mark.parametrize("activation, layer", [("relu", torch.nn.ReLU), ("sigmoid", torch.nn.Sigmoid),
                                               ("tanh", torch.nn.Tanh), ("leaky_relu", torch.nn.LeakyReLU)])
def test_mlp_activation_is_used_in_every_hidden_layer(activation, layer):
    model = build_model("mlp_512", activation=activation)
    assert sum(isinstance(m, layer) for m in model.modules()) == 2


def test_mlp_dropout_adds_a_dropout_after_each_hidden_layer():
    model = build_model("mlp_512", dropout=0.4)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.4 for d in drops)


def test_cnn_dropout_drops_on_the_two_hidden_fc_layers_only():
    drops = [m.p for m in build_model("cnn_dropout").modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5]


def test_model_options_name_what_each_model_accepts():
    assert model_options("mlp_64") == ["depth", "width", "activation", "dropout"]
    assert model_options("cnn_baseline") == ["dropout"]
    assert model_options("lenet5_modern") == []
    assert model_options("resnet_fast") == ["width", "blocks", "whiten"]


@pytest.mark.parametrize("init", ["normal", "xavier_uniform", "kaiming"])
def test_init_scheme_replaces_default_weights_and_zeroes_biases(init):
    torch.manual_seed(0)
    default = build_model("mlp_64")
    torch.manual_seed(0)
    model = build_model("mlp_64", init=init)
    first = model[1]
    assert not torch.equal(first.weight, default[1].weight)
    assert torch.count_nonzero(first.bias) == 0


def test_normal_init_has_small_standard_deviation():
    torch.manual_seed(0)
    weight = build_model("fcn_400", init="normal")[1].weight
    assert abs(weight.std().item() - 0.01) < 0.001


def in_seed_order(model: torch.nn.Sequential) -> torch.nn.Sequential:
    """The same layers (shared, so the same weights) with each MaxPool-ReLU pair back in the
    seeds' ReLU-MaxPool order."""
    layers = list(model)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], torch.nn.MaxPool2d) and isinstance(layers[i + 1], torch.nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("name", ["cnn_small", "lenet5_modern", "cnn_baseline", "cnn_dropout"])
def test_pooling_before_relu_gives_exactly_the_outputs_and_gradients_of_the_seeds_order(name):
    torch.manual_seed(0)
    model = build_model(name).eval()  # eval: no dropout masks to compare
    seeds = in_seed_order(model)
    assert [type(m) for m in seeds] != [type(m) for m in model]  # the order really differs
    x = torch.rand(8, 1, 28, 28) - 0.5  # negative pixels too: windows where every value is <= 0

    def outputs_and_gradients(net):
        for p in net.parameters():
            p.grad = None
        out = net(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in net.parameters()]

    ours, seed = outputs_and_gradients(model), outputs_and_gradients(seeds)
    assert torch.equal(ours[0], seed[0])
    assert all(torch.equal(a, b) for a, b in zip(ours[1], seed[1]))


def test_patch_mlp_with_overlapping_patches_has_the_hand_counted_parameters():
    # stride 3: (28 - 7) / 3 + 1 = 8 patches a side, 64 tokens; width 64, channel hidden 128, token hidden 64
    tokens = 8 * 8
    expected = (49 * 64 + 64) + (tokens * 64 + 64) + (64 * tokens + tokens) + (64 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    model = build_model("patch_mlp", patch_stride=3)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_patch_mlp_width_sets_the_embedding_and_the_channel_mixer():
    model = build_model("patch_mlp", width=256)
    assert model.embed.out_features == 256 and model.w3.out_features == 512 and model.head.in_features == 256


def test_resnet_fast_blocks_set_the_residual_blocks_of_each_stage():
    # [0, 1, 2] at width 16: no block at 28 px, one of 32 channels at 14 px, two of 64 at 7 px
    expected = (conv_bn(1, 16) + conv_bn(16, 32) + 2 * conv_bn(32, 32)
                + conv_bn(32, 64) + 2 * 2 * conv_bn(64, 64) + linear(64, 10))  # 190,586
    model = build_model("resnet_fast", width=16, blocks=[0, 1, 2])
    assert parameter_count(model) == expected == 190_586
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_fourth_resnet_fast_stage_works_at_4_pixels_with_twice_the_channels():
    expected = (conv_bn(1, 16) + conv_bn(16, 32) + 2 * conv_bn(32, 32) + conv_bn(32, 64) + 2 * conv_bn(64, 64)
                + conv_bn(64, 128) + 2 * conv_bn(128, 128) + linear(128, 10))  # 486,650
    model = build_model("resnet_fast", width=16, blocks=[0, 1, 1, 1])
    assert parameter_count(model) == expected == 486_650
    features = model[:-3](torch.zeros(2, 1, 28, 28))  # before pooling, flatten and the head
    assert features.shape == (2, 128, 4, 4)


def test_the_default_resnet_fast_keeps_the_state_dict_keys_of_models_saved_before_blocks():
    # Saved resnet_fast models (models/, the MLflow registry) load by these keys.
    keys = list(build_model("resnet_fast", width=4).state_dict())
    assert keys[:2] == ["0.0.weight", "0.1.weight"]
    assert "1.body.0.0.weight" in keys and "5.body.1.1.running_var" in keys
    assert keys[-2:] == ["8.weight", "8.bias"]
