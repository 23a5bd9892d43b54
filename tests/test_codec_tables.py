"""The codec decoder's load-time tables compute what the plain modules do."""

import pytest
import torch

from wyoming_qwen_tts.engine.codec import SnakeBeta

TIGHT = 1e-6


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
