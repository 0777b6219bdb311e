"""PixLM: a GPT-style decoder over pixel tokens, with a KV cache.

A sequence is ``[BOS, t_0, t_1, ..., t_{N-1}]`` (N image tokens in raster order, see
``pixlm.runtime.tokenizer``). The output at position p predicts the next token: image token
``t_p`` for p < N, and at p = N, after the whole image, the *label* token. Recognition is that
last next-token distribution restricted to the label tokens; the per-token negative
log-likelihood of the image tokens, from the same pass, is the anomaly map.

Shapes: B batch, T new tokens, P cached (past) tokens, C d_model, nh heads, hs head size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

KV = tuple[torch.Tensor, torch.Tensor]  # (key, value), each (B, nh, P, hs)


@dataclass
class PixLMConfig:
    n_codes: int  # palette entries: token ids 0..n_codes-1; BOS is n_codes
    n_labels: int  # label tokens follow BOS: n_codes+1 .. n_codes+n_labels
    grid_h: int  # token rows of an image
    grid_w: int  # token columns of an image
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    pos_2d: bool = True  # add row and column embeddings to the 1-D position embedding

    @property
    def vocab_size(self) -> int:
        return self.n_codes + 1 + self.n_labels

    @property
    def block_size(self) -> int:
        return self.grid_h * self.grid_w + 1  # BOS + image; the label is only ever predicted

    def to_dict(self) -> dict:
        return asdict(self)


ONNX_QUERY_CHUNKS = 4  # see _causal_chunks; 4 measured fastest of 1, 2, 4, 6, 8 (fp32 and INT8)


def _causal_chunks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T + mask) v for the exported graph, skipping most of the masked upper triangle.

    q (B, nh, T, hs) already scaled, k and v (B, nh, P+T, hs), mask (T, P+T) additive. The T
    queries go in ``ONNX_QUERY_CHUNKS`` row blocks; block [a, b) can only see keys 0..P+b-1, so it
    multiplies with those alone. A prefill then computes 10/16 of the T x T scores, not all:
    exact (the skipped keys get weight 0 either way), plain ONNX ops (Slice, MatMul, Softmax,
    Concat) that TensorRT parses. Chunk bounds follow the traced T, so decode (T = 1) still works.

        q ─┬─ rows [0, T/4)  ─► @ k[:P+T/4]^T + mask ─► softmax ─► @ v[:P+T/4] ─┐
           ├─ rows [T/4, T/2) ─► ... keys [:P+T/2]                              ├─► concat (B, nh, T, hs)
           └─ ...                                                               ┘
    """
    T = q.shape[2]
    P = k.shape[2] - T
    bounds = [T * i // ONNX_QUERY_CHUNKS for i in range(ONNX_QUERY_CHUNKS + 1)]
    ys = []
    for a, b in zip(bounds[:-2], bounds[1:-1], strict=True):
        att = q[:, :, a:b] @ k[:, :, : P + b].transpose(-2, -1) + mask[a:b, : P + b]
        ys.append(att.softmax(dim=-1) @ v[:, :, : P + b])
    a = bounds[-2]  # the last block sees every key: no Slice (a copy in ONNX Runtime) of k and v
    ys.append((q[:, :, a:] @ k.transpose(-2, -1) + mask[a:]).softmax(dim=-1) @ v)
    return torch.cat(ys, dim=2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: PixLMConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: KV | None) -> tuple[torch.Tensor, KV]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, nh, P+T, hs)
            v = torch.cat([past[1], v], dim=2)
        if torch.onnx.is_in_onnx_export():
            # The same math spelled out for the exported graph: SDPA's ONNX form rebuilds the mask,
            # the scale (Shape, Sqrt, Div) and a NaN guard (IsNaN, Where over every attention
            # weight) in each layer, a quarter of ONNX Runtime's time. Here: the additive mask is
            # built once (``mask`` is float then, 0 or -inf), the scale is a constant applied to q
            # (T x hs values, not T x (P+T) scores), and no row is all -inf (a query always sees
            # itself), so softmax needs no guard.
            y = _causal_chunks(q * (1.0 / math.sqrt(hs)), k, v, mask)
        else:
            # No dropout on the attention weights: on CPU it made a training step 1.5x slower (it
            # takes SDPA off its fused path); dropout stays on the embeddings and the MLP branch.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: PixLMConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: PixLMConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: KV | None) -> tuple[torch.Tensor, KV]:
        a, present = self.attn(self.ln_1(x), mask, past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


class PixLM(nn.Module):
    def __init__(self, cfg: PixLMConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, C)
        self.pos_emb = nn.Embedding(cfg.block_size, C)
        if cfg.pos_2d:
            # Input at position p >= 1 is image token p-1, at row (p-1)//W, column (p-1)%W.
            # BOS (p = 0) gets the spare row/column index grid_h / grid_w.
            p = torch.arange(cfg.block_size)
            row = torch.where(p > 0, (p - 1) // cfg.grid_w, cfg.grid_h)
            col = torch.where(p > 0, (p - 1) % cfg.grid_w, cfg.grid_w)
            self.register_buffer("row_of", row, persistent=False)
            self.register_buffer("col_of", col, persistent=False)
            self.row_emb = nn.Embedding(cfg.grid_h + 1, C)
            self.col_emb = nn.Embedding(cfg.grid_w + 1, C)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Linear(C, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(
        self, input_ids: torch.Tensor, past_key_values: list[KV] | None = None
    ) -> tuple[torch.Tensor, list[KV]]:
        """input_ids (B, T) at positions P..P+T-1 -> logits (B, T, vocab), present KV per layer.

        ``past_key_values``: one (key, value) per layer, each (B, nh, P, hs); P may be 0.
        """
        P = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        x, mask = self._embed(input_ids, P)
        presents = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, None if past_key_values is None else past_key_values[i])
            presents.append(kv)
        return self.head(self.ln_f(x)), presents

    def _embed(self, input_ids: torch.Tensor, P: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token + position embeddings (B, T, C) of tokens at positions P.., and the causal mask."""
        T = input_ids.shape[1]
        pos = torch.arange(T, device=input_ids.device) + P  # (T,) absolute positions
        x = self.tok_emb(input_ids) + self.pos_emb(pos)
        if self.cfg.pos_2d:
            x = x + self.row_emb(self.row_of[pos]) + self.col_emb(self.col_of[pos])
        # Explicit causal mask from the past length: query P+i sees keys 0..P+i. (is_causal=True
        # would align the triangle to key 0 and be wrong as soon as a cache is present.)
        keys = torch.arange(P + T, device=input_ids.device)
        mask = keys[None, :] <= pos[:, None]  # (T, P+T) bool
        if torch.onnx.is_in_onnx_export():  # additive, built once for every layer (see attention)
            mask = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, float("-inf"))
        return self.drop(x), mask

    @torch.no_grad()
    def features(self, tokens: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """(B, N) image tokens -> (B, d_model): what a linear probe reads (as in Image GPT).

        The residual stream after block ``layer`` (default: the middle one), layer-normalised
        without learned scale and averaged over the sequence. Image GPT found middle layers, not
        the last, carry the most linearly separable features of a generative model.
        """
        layer = max(1, self.cfg.n_layer // 2) if layer is None else layer
        if not 1 <= layer <= self.cfg.n_layer:
            raise ValueError(f"layer must be within 1..{self.cfg.n_layer}, got {layer}")
        x, mask = self._embed(self.with_bos(tokens), 0)
        for block in self.blocks[:layer]:
            x, _ = block(x, mask, None)
        return F.layer_norm(x.float(), (x.shape[-1],)).mean(1)

    # -- the "language" read off the logits ---------------------------------------------------
    def code_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits restricted to palette codes (the next pixel)."""
        return logits[..., : self.cfg.n_codes]

    def label_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits restricted to label tokens (the next word after the image)."""
        return logits[..., self.cfg.n_codes + 1 :]

    def with_bos(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N) image tokens -> (B, N+1) sequence starting with BOS."""
        bos = torch.full((tokens.shape[0], 1), self.cfg.n_codes, dtype=tokens.dtype, device=tokens.device)
        return torch.cat([bos, tokens], dim=1)

    def losses(
        self, tokens: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Mean next-pixel loss (nats), label loss (or None), label logits (B, L).

        ``labels`` -1 marks an unlabeled image (self-supervised: pixel loss only).
        """
        logits, _ = self(self.with_bos(tokens))
        logits = logits.float()  # the losses in fp32 even under bf16 autocast
        N = tokens.shape[1]
        pix = F.cross_entropy(self.code_logits(logits[:, :N]).flatten(0, 1), tokens.flatten())
        lab_logits = self.label_logits(logits[:, N])
        lab = None
        if labels is not None and self.cfg.n_labels > 0 and bool((labels >= 0).any()):
            lab = F.cross_entropy(lab_logits, labels, ignore_index=-1)
        return pix, lab, lab_logits

    @torch.no_grad()
    def analyze(self, tokens: torch.Tensor, head: bool = False) -> tuple[torch.Tensor, ...]:
        """(B, N) image tokens -> label probabilities (B, L), per-token NLL in bits (B, N), and
        with ``head`` the logits after the last image token (B, vocab), the open-set gate's input."""
        logits, _ = self(self.with_bos(tokens))
        N = tokens.shape[1]
        logp = F.log_softmax(self.code_logits(logits[:, :N]).float(), dim=-1)
        nll = -logp.gather(-1, tokens[..., None])[..., 0] / math.log(2)
        probs = F.softmax(self.label_logits(logits[:, N]).float(), dim=-1)
        return (probs, nll, logits[:, N].float()) if head else (probs, nll)

    @torch.no_grad()
    def generate(
        self,
        prefix: torch.Tensor,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Complete images: (B, k) known image tokens -> (B, N) tokens, sampled with the KV cache."""
        N = self.cfg.grid_h * self.cfg.grid_w
        out = prefix
        logits, past = self(self.with_bos(prefix))
        for _ in range(N - prefix.shape[1]):
            nxt = self.code_logits(logits[:, -1]).float() / max(temperature, 1e-6)
            if top_k is not None:
                kth = torch.topk(nxt, min(top_k, nxt.shape[-1])).values[:, -1:]
                nxt = nxt.masked_fill(nxt < kth, float("-inf"))
            tok = torch.multinomial(F.softmax(nxt, dim=-1), 1, generator=generator)
            out = torch.cat([out, tok], dim=1)
            logits, past = self(tok, past)
        return out
