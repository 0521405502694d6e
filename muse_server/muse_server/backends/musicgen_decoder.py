"""MusicGen's decoder forward pass written over the model's own weights, so that one pass can
step many streams that sit at different positions with different text prompts.

transformers' ``MusicgenDecoder`` takes one cache length for the whole batch (positions are
``cache_length + arange``) and one encoder length; continuous batching needs per-row positions,
per-row KV-cache lengths and per-row text of different lengths. The pass is small (sinusoidal
positions, pre-norm self-attention, cross-attention, a two-layer FFN, per-codebook heads), so it
is redone here with the same submodules (``embed_tokens``, ``embed_positions.weights``, each
layer's ``LayerNorm``/``Linear`` modules, ``lm_heads``) and ``scaled_dot_product_attention``,
the kernel transformers' default ``sdpa`` attention calls. The tests prove it equal to
transformers' decoder (logits within float rounding, same sampled tokens).

Row layout: a stream with classifier-free guidance owns two consecutive rows, conditioned and
null (``generate`` orders a stream's batch of two the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import scaled_dot_product_attention


@dataclass(frozen=True)
class CrossKV:
    """A text prompt's cross-attention keys and values for every decoder layer, projected once:
    ``keys[l]``/``values[l]`` ``(rows, heads, text_len, head_dim)``; ``bias`` ``(rows, 1, 1,
    text_len)`` additive mask (0 attend, the dtype's lowest value for masked tokens, which is
    what transformers' mask does: a fully masked null row averages all-zero values to 0)."""

    keys: tuple
    values: tuple
    bias: torch.Tensor

    @property
    def length(self) -> int:
        return self.bias.shape[-1]

    def padded(self, length: int) -> 'CrossKV':
        """The same text padded with masked tokens to ``length``."""
        if length == self.length:
            return self
        pad = length - self.length
        lowest = torch.finfo(self.bias.dtype).min
        return CrossKV(tuple(torch.nn.functional.pad(k, (0, 0, 0, pad)) for k in self.keys),
                       tuple(torch.nn.functional.pad(v, (0, 0, 0, pad)) for v in self.values),
                       torch.nn.functional.pad(self.bias, (0, pad), value=lowest))

    @staticmethod
    def stacked(conditions) -> 'CrossKV':
        """Several texts' rows one after the other, padded to the longest."""
        length = max(condition.length for condition in conditions)
        padded = [condition.padded(length) for condition in conditions]
        layers = range(len(padded[0].keys))
        return CrossKV(tuple(torch.cat([c.keys[i] for c in padded]) for i in layers),
                       tuple(torch.cat([c.values[i] for c in padded]) for i in layers),
                       torch.cat([c.bias for c in padded]))


class DecoderPass:
    """The decoder of a ``MusicgenForCausalLM`` (``model.decoder``), run layer by layer."""

    def __init__(self, causal_lm):
        decoder = causal_lm.model.decoder
        self._decoder = decoder
        self.layers = list(decoder.layers)
        self.lm_heads = causal_lm.lm_heads
        self.num_codebooks = decoder.num_codebooks
        attention = self.layers[0].self_attn
        self.heads = attention.num_heads
        self.head_dim = attention.head_dim
        self.scaling = attention.scaling
        self.width = decoder.d_model
        self.activation = self.layers[0].activation_fn

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def cross_kv(self, hidden: torch.Tensor, mask: torch.Tensor) -> CrossKV:
        """Project a text condition (``TextCondition.hidden``/``mask``) for every layer."""
        rows, length, _ = hidden.shape
        keys, values = [], []
        for layer in self.layers:
            attention = layer.encoder_attn
            keys.append(self._split(attention.k_proj(hidden)))
            values.append(self._split(attention.v_proj(hidden)))
        bias = torch.zeros((rows, 1, 1, length), dtype=hidden.dtype, device=hidden.device)
        bias.masked_fill_(mask[:, None, None, :] == 0, torch.finfo(hidden.dtype).min)
        return CrossKV(tuple(keys), tuple(values), bias)

    def _split(self, states: torch.Tensor) -> torch.Tensor:
        """(rows, T, width) -> (rows, heads, T, head_dim)"""
        rows, length, _ = states.shape
        return states.view(rows, length, self.heads, self.head_dim).transpose(1, 2)

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``ids`` (rows, codebooks, T), ``positions`` (rows, T) -> (rows, T, width), as
        ``MusicgenDecoder.forward`` sums them."""
        embeds = sum(self._decoder.embed_tokens[codebook](ids[:, codebook])
                     for codebook in range(self.num_codebooks))
        table = self._decoder.embed_positions.weights
        if int(positions.max()) >= table.shape[0]:
            raise ValueError(f'position {int(positions.max())} beyond the decoder\'s '
                             f'{table.shape[0]} positions')
        position_embeds = table.index_select(0, positions.reshape(-1)).view(*positions.shape, -1)
        return embeds + position_embeds.to(embeds.dtype)

    def forward(self, hidden: torch.Tensor, self_attend, cross: CrossKV, morph=None) -> torch.Tensor:
        """Run every layer on ``hidden`` (rows, T, width); return logits (rows, codebooks, T,
        vocab).

        ``self_attend(layer_index, q, k, v)`` stores ``k``/``v`` in the caller's cache and
        returns the attention output (rows, heads, T, head_dim). ``morph``: None, or
        ``(target: CrossKV, weight (rows,))``: the cross-attention output becomes
        ``(1 - weight) * attend(cross) + weight * attend(target)`` (exactly the one or the
        other at weight 0 or 1).
        """
        rows, length, _ = hidden.shape
        for index, layer in enumerate(self.layers):
            residual = hidden
            normed = layer.self_attn_layer_norm(hidden)
            attention = layer.self_attn
            out = self_attend(index, self._split(attention.q_proj(normed)),
                              self._split(attention.k_proj(normed)),
                              self._split(attention.v_proj(normed)))
            hidden = residual + attention.out_proj(out.transpose(1, 2).reshape(rows, length, -1))

            residual = hidden
            normed = layer.encoder_attn_layer_norm(hidden)
            attention = layer.encoder_attn
            query = self._split(attention.q_proj(normed))
            out = scaled_dot_product_attention(query, cross.keys[index], cross.values[index],
                                               attn_mask=cross.bias, scale=self.scaling)
            if morph is not None:
                target, weight = morph
                toward = scaled_dot_product_attention(query, target.keys[index],
                                                      target.values[index],
                                                      attn_mask=target.bias, scale=self.scaling)
                weight = weight.to(out.dtype).view(-1, 1, 1, 1)
                out = (1 - weight) * out + weight * toward
            hidden = residual + attention.out_proj(out.transpose(1, 2).reshape(rows, length, -1))

            residual = hidden
            normed = layer.final_layer_norm(hidden)
            hidden = residual + layer.fc2(self.activation(layer.fc1(normed)))
        hidden = self._decoder.layer_norm(hidden)
        return torch.stack([head(hidden) for head in self.lm_heads], dim=1)


class PrivateCache:
    """One stream's own self-attention cache (rows, heads, T, head_dim) per layer, used while it
    opens a window (its prefill, possibly in chunks) before it joins the batch."""

    def __init__(self, num_layers: int, scale: float):
        self._scale = scale
        self.keys = [None] * num_layers
        self.values = [None] * num_layers

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def __call__(self, index, query, key, value):
        past = 0 if self.keys[index] is None else self.keys[index].shape[2]
        if past:
            key = torch.cat([self.keys[index], key], dim=2)
            value = torch.cat([self.values[index], value], dim=2)
        self.keys[index], self.values[index] = key, value
        steps = query.shape[2]
        if steps == 1:
            return scaled_dot_product_attention(query, key, value, scale=self._scale)
        if past == 0:
            return scaled_dot_product_attention(query, key, value, is_causal=True, scale=self._scale)
        allowed = (torch.arange(key.shape[2], device=key.device)[None, :]
                   <= past + torch.arange(steps, device=key.device)[:, None])
        return scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=self._scale)


class BatchCache:
    """The self-attention cache of every stream in the batch: per layer one tensor
    (row capacity, heads, length capacity, head_dim); a stream's rows hold its keys at their
    own positions, and attention masks each row to its own length."""

    def __init__(self, num_layers: int, heads: int, head_dim: int, scale: float, dtype, device,
                 max_length: int):
        self.scale = scale
        self._shape = (heads, head_dim)
        self._dtype, self._device = dtype, device
        self._max_length = max_length
        self.keys = [None] * num_layers
        self.values = [None] * num_layers
        self.row_capacity = 0
        self.length_capacity = 0
        self._rows = None           # slice of rows this pass runs on
        self._positions = None      # (rows,) position written by this pass
        self._mask = None

    def _allocate(self, rows: int, length: int):
        heads, head_dim = self._shape
        for index in range(len(self.keys)):
            for store in (self.keys, self.values):
                fresh = torch.zeros((rows, heads, length, head_dim), dtype=self._dtype,
                                    device=self._device)
                old = store[index]
                if old is not None:
                    fresh[:old.shape[0], :, :old.shape[2]] = old
                store[index] = fresh
        self.row_capacity, self.length_capacity = rows, length

    def reserve(self, rows: int, length: int):
        """Make room for ``rows`` rows of ``length`` positions (grows by doubling)."""
        if rows > self.row_capacity or length > self.length_capacity:
            grown_rows = (max(rows, min(2 * self.row_capacity, rows + 16))
                          if rows > self.row_capacity else self.row_capacity)
            grown_length = (min(self._max_length, max(length, 2 * self.length_capacity))
                            if length > self.length_capacity else self.length_capacity)
            self._allocate(grown_rows, max(grown_length, length))

    def put(self, first_row: int, private: PrivateCache):
        """Copy a stream's private cache into rows [first_row, first_row + its rows)."""
        rows, length = private.keys[0].shape[0], private.length
        self.reserve(first_row + rows, length)
        for index in range(len(self.keys)):
            self.keys[index][first_row:first_row + rows, :, :length] = private.keys[index]
            self.values[index][first_row:first_row + rows, :, :length] = private.values[index]

    def move(self, source: int, target: int, rows: int, length: int):
        """Copy rows [source, +rows) to [target, +rows) (a leaving stream's slot is refilled)."""
        for store in (self.keys, self.values):
            for tensor in store:
                tensor[target:target + rows, :, :length] = tensor[source:source + rows, :, :length]

    def select(self, rows: slice, positions: torch.Tensor):
        """Set the rows and the per-row position the next decode pass writes."""
        self._rows = rows
        self._positions = positions
        span = int(positions.max()) + 1
        self.reserve(rows.stop, span)
        self._span = span
        if bool((positions == span - 1).all()):
            self._mask = None       # every row as long as the longest: nothing to mask
        else:
            self._mask = (torch.arange(span, device=positions.device)[None, :]
                          <= positions[:, None])[:, None, None, :]
        self._row_index = torch.arange(rows.start, rows.stop, device=positions.device)

    def __call__(self, index, query, key, value):
        keys, values = self.keys[index], self.values[index]
        keys[self._row_index, :, self._positions] = key[:, :, 0]
        values[self._row_index, :, self._positions] = value[:, :, 0]
        return scaled_dot_product_attention(
            query, keys[self._rows, :, :self._span], values[self._rows, :, :self._span],
            attn_mask=self._mask, scale=self.scale)
