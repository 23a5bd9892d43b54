"""The codec decoder's load-time tables and CPU conv forms compute what the plain modules do."""

import pytest
import torch
import torch.nn.functional as F

from wyoming_qwen_tts.engine import codec
from wyoming_qwen_tts.engine.codec import CausalConv, CausalTransConv, Conv1dAsMatmul, SnakeBeta

TIGHT = 1e-6
FLOAT32_CONV = 1e-5  # a conv computed in another order, float32, inputs ~1


def snake_by_the_old_formula(x, alpha, beta):
    return x + (1.0 / (torch.exp(beta)[None, :, None] + 1e-9)) * torch.sin(x * torch.exp(alpha)[None, :, None]).pow(2)


def random_snake(channels, seed):
    gen = torch.Generator().manual_seed(seed)
    snake = SnakeBeta(channels).requires_grad_(False)
    snake.alpha.copy_(torch.randn(channels, generator=gen))
    snake.beta.copy_(torch.randn(channels, generator=gen))
    snake.build_tables()
    return snake, torch.randn(2, channels, 50, generator=gen) * 3


def test_snake_tables_hold_exp_alpha_and_the_inverse_of_exp_beta():
    snake, _ = random_snake(16, 0)
    assert torch.allclose(snake.frequency[:, 0], torch.exp(snake.alpha), rtol=TIGHT, atol=0)
    assert torch.allclose(snake.inverse_magnitude[:, 0], 1.0 / (torch.exp(snake.beta) + 1e-9), rtol=TIGHT, atol=0)


def test_snake_with_tables_equals_the_old_formula():
    snake, x = random_snake(16, 1)
    with torch.inference_mode():
        assert float((snake(x) - snake_by_the_old_formula(x, snake.alpha, snake.beta)).abs().max()) <= TIGHT


def test_a_wrong_snake_table_is_caught():
    snake, x = random_snake(16, 2)
    snake.inverse_magnitude = torch.exp(snake.beta)[:, None]  # e^beta, not its inverse
    with torch.inference_mode():
        assert float((snake(x) - snake_by_the_old_formula(x, snake.alpha, snake.beta)).abs().max()) > 1e-2


def test_snake_without_tables_says_so():
    with pytest.raises(RuntimeError, match="build_tables"):
        SnakeBeta(4)(torch.zeros(1, 4, 3))


def random_module(module, seed):
    gen = torch.Generator().manual_seed(seed)
    module.requires_grad_(False)
    for param in module.parameters():
        param.copy_(torch.randn(param.shape, generator=gen) / param.shape[-1] ** 0.5)
    return module


@pytest.mark.parametrize(("kernel", "stride"), [(16, 8), (10, 5), (2, 2), (3, 3)])
def test_transposed_conv_as_plain_conv_streams_like_the_transposed_conv(kernel, stride):
    """Against the ConvTranspose1d path, chunk by chunk with the carried frame, batch 2."""
    from wyoming_qwen_tts.engine.codec import DecoderState

    plain = random_module(CausalTransConv(24, 12, kernel, stride), 3)
    table = random_module(CausalTransConv(24, 12, kernel, stride), 3)
    table.build_tables()
    assert plain.as_conv is None and table.as_conv is not None
    x = torch.randn(2, 24, 11, generator=torch.Generator().manual_seed(4))

    def streamed(module, sizes):
        state = DecoderState({id(module): torch.zeros(2, 24, 1)}, [], [], [0, 0])
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return torch.cat([module(x[..., s:s + n], state) for s, n in zip(starts, sizes)], dim=-1)

    with torch.inference_mode():
        expected = streamed(plain, [11])
        assert expected.shape == (2, 12, 11 * stride)
        for sizes in ([11], [1, 3, 7]):
            assert float((streamed(table, sizes) - expected).abs().max()) <= FLOAT32_CONV


@pytest.mark.parametrize(("taps", "dilation", "batch"), [(7, 1, 1), (7, 9, 2), (1, 1, 3), (2, 1, 1)])
def test_conv_as_matmul_equals_conv1d(taps, dilation, batch):
    gen = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(20, 12, taps, generator=gen) / 6, torch.randn(20, generator=gen)
    x = torch.randn(batch, 12, 30 + (taps - 1) * dilation, generator=gen)
    with torch.inference_mode():
        got = Conv1dAsMatmul(weight, bias, dilation)(x)
        assert got.shape == (batch, 20, 30)
        assert float((got - F.conv1d(x, weight, bias, dilation=dilation)).abs().max()) <= FLOAT32_CONV


def test_a_wrong_matmul_layout_is_caught():
    """The unfolded columns must follow the weight's (in, tap) memory order."""
    gen = torch.Generator().manual_seed(6)
    weight, x = torch.randn(8, 6, 3, generator=gen), torch.randn(1, 6, 10, generator=gen)
    swapped = weight.transpose(1, 2).contiguous().view(8, 6, 3)  # the same numbers in (tap, in) order
    with torch.inference_mode():
        assert float((Conv1dAsMatmul(swapped, None, 1)(x) - F.conv1d(x, weight)).abs().max()) > 1e-2


def test_big_convs_take_the_matmul_form_only_on_short_inputs(monkeypatch):
    conv = random_module(CausalConv(16, 16, 7, dilation=3), 7)
    monkeypatch.setattr(codec, "MATMUL_MIN_WEIGHT", conv.conv.weight.numel())
    conv.build_tables()
    assert conv.as_matmul is not None
    short = torch.zeros(1, 16, codec.MATMUL_MAX_STEPS + conv.context)
    assert conv.as_matmul.suits(short) and not conv.as_matmul.suits(torch.zeros(2, 16, short.shape[-1]))


def test_whole_tiny_decoder_with_every_conv_as_matmul(monkeypatch):
    """The tiny checkpoint's weights are below MATMUL_MIN_WEIGHT: force the matmul form everywhere
    and check it against the direct convs, whole and streamed (the stream-vs-whole bound 1e-4)."""
    from wyoming_qwen_tts.engine import QwenTTS

    from .conftest import FIXTURES

    decoder = QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype="float32").codec.decoder
    codes = torch.randint(0, 256, (1, 21, 16), generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        direct = decoder(codes)
        monkeypatch.setattr(codec, "MATMUL_MIN_WEIGHT", 0)
        decoder.build_tables()
        taken = [m for m in decoder.modules() if isinstance(m, (CausalConv, CausalTransConv)) and m.as_matmul]
        assert len(taken) > 20
        as_matmul = decoder(codes)
        state, parts = decoder.new_state(), []
        for start, size in ((0, 1), (1, 4), (5, 16)):
            parts.append(decoder(codes[:, start:start + size], state))
    assert float((as_matmul - direct).abs().max()) <= 1e-4
    assert float((torch.cat(parts, dim=1) - as_matmul).abs().max()) <= 1e-4
