#!/usr/bin/env python3
"""
Trains w4a8's default model on the corpus that corpus.sh builds, in one run on one GPU, and writes it
in Hugging Face layout. Runs on the device machine (torch, tokenizers, transformers installed there);
also runs on a CPU with --tiny, to check the script end to end.

  1. tokenizer  byte-level BPE (tokenizers), trained on train.txt: <unk>=0 <s>=1 </s>=2 <pad>=3
  2. tokens     every passage (blank-line separated) of each split -> <s> ids </s>, concatenated
  3. model      Llama: RMSNorm, RoPE (Hugging Face's rotate-half layout), SwiGLU, grouped-query
                attention, tied embeddings; written here in plain PyTorch (readable, compiles well)
                with Hugging Face's parameter names
  4. training   bf16 autocast, fp32 master weights, AdamW, warm-up then cosine; random 512-token
                windows of the train stream; the number of steps is fixed after a few timed steps so
                that the run ends before --deadline; the weights with the best validation loss win
  5. export     LlamaForCausalLM.save_pretrained (BF16 safetensors) + tokenizer.json; the exported
                model is reloaded with transformers and must compute the same logits as ours
  6. report     validation and test perplexity in FP32 (no autocast, no TF32), greedy continuations,
                all in metrics.json

Usage (device):  python3 train.py --data DIR_WITH_train/valid/test.txt --out OUT_DIR
Usage (check):   python3 train.py --data ... --out ... --tiny --device cpu
"""
import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

START = time.time()
SPECIAL_TOKENS = ['<unk>', '<s>', '</s>', '<pad>']   # ids 0..3, as Llama 2 orders the first three
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
PROMPTS = [
    'The history of the',
    'Once upon a time, there was a',
    'The most important thing to remember is that',
    'In the morning, the old man',
    'To install the package, you',
    'The weather today is',
]


def log(message):
    print(f'[{time.time() - START:7.1f}s] {message}', flush=True)


# ---------------------------------------------------------------------------------------------
# Model: shapes in comments use B batch, T tokens, D hidden, H heads, K kv heads, E head_dim.


@dataclass
class Config:
    vocab_size: int = 8192
    hidden_size: int = 512            # D
    intermediate_size: int = 1408     # SwiGLU width; 11 * 128, so INT4 groups of 128 divide it
    num_hidden_layers: int = 8
    num_attention_heads: int = 8      # H
    num_key_value_heads: int = 2      # K: each kv head serves H / K query heads
    head_dim: int = 64                # E
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    dropout: float = 0.0              # training only: on attention and MLP outputs (not exported)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # As Hugging Face's LlamaRMSNorm: normalize in fp32, scale in the input dtype.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(cfg, device):
    """cos, sin: [T, E], in Hugging Face's layout: frequencies repeated over the two halves."""
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=device) / cfg.head_dim))
    t = torch.arange(cfg.max_position_embeddings, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)                  # [T, E/2]
    emb = torch.cat([freqs, freqs], dim=-1)           # [T, E]
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    # x: [B, heads, T, E]; cos, sin: [T, E]. Pairs (i, i + E/2) rotate together (rotate-half).
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D, H, K, E = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(D, H * E, bias=False)
        self.k_proj = nn.Linear(D, K * E, bias=False)
        self.v_proj = nn.Linear(D, K * E, bias=False)
        self.o_proj = nn.Linear(H * E, D, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, K, E = self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim
        q = self.q_proj(x).view(B, T, H, E).transpose(1, 2)          # [B, H, T, E]
        k = self.k_proj(x).view(B, T, K, E).transpose(1, 2)          # [B, K, T, E]
        v = self.v_proj(x).view(B, T, K, E).transpose(1, 2)
        q, k = apply_rope(q, cos[:T], sin[:T]), apply_rope(k, cos[:T], sin[:T])
        # Query head h reads kv head h // (H / K), as Hugging Face's repeat_kv.
        k = k.repeat_interleave(H // K, dim=1)                        # [B, H, T, E]
        v = v.repeat_interleave(H // K, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, E]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * E))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))   # SwiGLU


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin):
        x = x + self.dropout(self.self_attn(self.input_layernorm(x), cos, sin))
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x)))


class Backbone(nn.Module):
    """Named 'model' inside Llama, so that state_dict keys are Hugging Face's."""

    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.model.embed_tokens.weight          # tied
        cos, sin = rope_tables(cfg, 'cpu')
        self.register_buffer('rope_cos', cos, persistent=False)
        self.register_buffer('rope_sin', sin, persistent=False)
        # GPT-2 style init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers).
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.num_hidden_layers) if name.endswith(('o_proj.weight', 'down_proj.weight')) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, ids):
        # ids: [B, T] -> logits [B, T, vocab] (fp32 under autocast: lm_head output is upcast by the loss)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, self.rope_cos, self.rope_sin)
        return self.lm_head(self.model.norm(x))


def hf_config_dict(cfg):
    """config.json of LlamaForCausalLM for this model."""
    return {
        'architectures': ['LlamaForCausalLM'], 'model_type': 'llama',
        'vocab_size': cfg.vocab_size, 'hidden_size': cfg.hidden_size, 'intermediate_size': cfg.intermediate_size,
        'num_hidden_layers': cfg.num_hidden_layers, 'num_attention_heads': cfg.num_attention_heads,
        'num_key_value_heads': cfg.num_key_value_heads, 'head_dim': cfg.head_dim,
        'max_position_embeddings': cfg.max_position_embeddings, 'rope_theta': cfg.rope_theta,
        'rms_norm_eps': cfg.rms_norm_eps, 'hidden_act': 'silu', 'tie_word_embeddings': True,
        'attention_bias': False, 'mlp_bias': False, 'attention_dropout': 0.0, 'initializer_range': 0.02,
        'bos_token_id': BOS_ID, 'eos_token_id': EOS_ID, 'pad_token_id': PAD_ID, 'torch_dtype': 'bfloat16',
    }


# ---------------------------------------------------------------------------------------------
# Tokenizer and data


def read_passages(path):
    return [p for p in Path(path).read_text(encoding='utf-8').split('\n\n') if p.strip()]


def train_tokenizer(passages, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(passages, trainer=trainer, length=len(passages))
    # Encoding text adds <s> in front, as Llama tokenizers do; the engine reads this from tokenizer.json.
    tok.post_processor = processors.TemplateProcessing(single='<s> $A', pair='<s> $A <s> $B', special_tokens=[('<s>', BOS_ID)])
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [UNK_ID, BOS_ID, EOS_ID, PAD_ID]
    return tok


def token_stream(tok, passages):
    """<s> passage </s> for every passage, concatenated: int32 [N]."""
    ids = []
    for enc in tok.encode_batch(passages):          # post-processor already put <s> in front
        ids.extend(enc.ids)
        ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.int32)


def save_tokenizer(tok, out_dir, cfg):
    tok.save(str(out_dir / 'tokenizer.json'))
    (out_dir / 'tokenizer_config.json').write_text(json.dumps({
        'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': '<s>', 'eos_token': '</s>',
        'unk_token': '<unk>', 'pad_token': '<pad>', 'add_bos_token': True, 'add_eos_token': False,
        'model_max_length': cfg.max_position_embeddings, 'clean_up_tokenization_spaces': False,
    }, indent=2) + '\n')


# ---------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(model, stream, seq_len, batch, device, max_tokens=None, fp32=True):
    """
    Mean negative log-likelihood (nats per token) of `stream` cut into non-overlapping windows of
    seq_len tokens (the last one shorter); in each window every token but the first is predicted.
    fp32: no autocast (TF32 is off for the whole run). Returns (nll, predicted tokens).
    """
    was_training = model.training
    model.eval()
    if max_tokens is not None:
        stream = stream[:max_tokens]
    windows = [stream[i:i + seq_len] for i in range(0, len(stream) - 1, seq_len)]
    windows = [w for w in windows if len(w) > 1]
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        group = windows[i:i + batch]
        T = max(len(w) for w in group)
        ids = torch.full((len(group), T), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(group), T), dtype=torch.bool)
        for j, w in enumerate(group):
            ids[j, :len(w)] = w.long()
            mask[j, :len(w)] = True
        ids, mask = ids.to(device), mask.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=not fp32):
            logits = model(ids[:, :-1])
        nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction='none')
        keep = mask[:, 1:].reshape(-1)
        total += nll[keep].double().sum().item()
        count += int(keep.sum().item())
    model.train(was_training)
    return total / count, count


@torch.no_grad()
def greedy(model, tok, prompt, new_tokens, device):
    was_training = model.training
    model.eval()
    ids = torch.tensor([tok.encode(prompt).ids], dtype=torch.long, device=device)
    for _ in range(new_tokens):
        logits = model(ids[:, -model.cfg.max_position_embeddings:])[:, -1, :]
        nxt = logits.argmax(-1, keepdim=True)
        if nxt.item() == EOS_ID:
            break
        ids = torch.cat([ids, nxt], dim=1)
    model.train(was_training)
    return tok.decode(ids[0].tolist(), skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', required=True, help='folder with train.txt, valid.txt, test.txt')
    ap.add_argument('--out', required=True, help='output folder (Hugging Face layout + metrics.json)')
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--vocab', type=int, default=8192)
    ap.add_argument('--batch', type=int, default=64, help='sequences of --seq-len tokens per step')
    ap.add_argument('--seq-len', type=int, default=512)
    ap.add_argument('--lr', type=float, default=1.5e-3)
    ap.add_argument('--min-lr-ratio', type=float, default=0.1)
    ap.add_argument('--warmup', type=float, default=0.03, help='fraction of steps')
    ap.add_argument('--weight-decay', type=float, default=0.1)
    ap.add_argument('--dropout', type=float, default=0.1)
    ap.add_argument('--steps', type=int, default=0, help='fixed number of steps (0: as many as fit before --deadline)')
    ap.add_argument('--deadline', type=float, default=540, help='seconds from start by which everything must be written')
    ap.add_argument('--reserve', type=float, default=75, help='seconds kept after training for evaluation and export')
    ap.add_argument('--evals', type=int, default=12, help='validation checks during training')
    ap.add_argument('--compile', choices=['auto', 'on', 'off'], default='auto')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--tiny', action='store_true', help='a very small model and data slice: checks the script on a CPU')
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = False    # FP32 evaluation means FP32 products
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tokenizers
    try:
        import transformers
        hf_version = transformers.__version__
    except ImportError:
        hf_version = 'absent'
    log(f'torch {torch.__version__}, tokenizers {tokenizers.__version__}, transformers {hf_version}, device {device}'
        + (f' ({torch.cuda.get_device_name()})' if device.type == 'cuda' else ''))

    # 1-2. tokenizer and token streams
    splits = {name: read_passages(Path(args.data) / f'{name}.txt') for name in ('train', 'valid', 'test')}
    if args.tiny:
        splits = {k: v[:2000 if k == 'train' else 100] for k, v in splits.items()}
    log('passages: ' + ', '.join(f'{k} {len(v)} ({sum(len(p) for p in v) / 1e6:.1f} MB)' for k, v in splits.items()))
    tok = train_tokenizer(splits['train'], 1024 if args.tiny else args.vocab)
    log(f'tokenizer: {tok.get_vocab_size()} tokens')
    streams = {k: token_stream(tok, v) for k, v in splits.items()}
    text_bytes = {k: sum(len(p.encode('utf-8')) for p in v) for k, v in splits.items()}
    log('tokens: ' + ', '.join(f'{k} {len(v):,} ({text_bytes[k] / len(v):.2f} bytes/token)' for k, v in streams.items()))

    # 3. model
    cfg = Config(vocab_size=tok.get_vocab_size(), dropout=args.dropout, max_position_embeddings=args.seq_len)
    if args.tiny:
        cfg = Config(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=args.seq_len,
                     dropout=args.dropout)
    model = Llama(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.model.embed_tokens.weight.numel()
    log(f'model: {n_params:,} parameters ({n_params - n_embed:,} without the tied embedding); {asdict(cfg)}')

    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and 'embed_tokens' not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and 'embed_tokens' not in n)]
    fused = device.type == 'cuda'
    optimizer = torch.optim.AdamW([{'params': decay, 'weight_decay': args.weight_decay},
                                   {'params': no_decay, 'weight_decay': 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)

    use_compile = args.compile == 'on' or (args.compile == 'auto' and device.type == 'cuda')
    step_model = model
    if use_compile:
        try:
            step_model = torch.compile(model)
        except Exception as e:  # noqa: BLE001 -- any failure: train eagerly rather than not at all
            log(f'torch.compile unavailable ({e!r}); eager')
            step_model, use_compile = model, False

    train_ids = streams['train'].to(device).long()
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    T = args.seq_len

    def batch():
        # Random windows of T + 1 tokens of the train stream: inputs [B, T], targets [B, T].
        starts = torch.randint(0, len(train_ids) - T - 1, (args.batch,), device=device, generator=gen)
        w = train_ids[starts[:, None] + torch.arange(T + 1, device=device)]
        return w[:, :-1], w[:, 1:]

    def forward_backward(x, y):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            logits = step_model(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        return loss

    def train_step(lr):
        nonlocal step_model, use_compile
        for g in optimizer.param_groups:
            g['lr'] = lr
        x, y = batch()
        try:
            loss = forward_backward(x, y)
        except Exception as e:  # noqa: BLE001 -- compilation fails at the first forward or backward
            if not use_compile:
                raise
            log(f'torch.compile failed ({type(e).__name__}: {str(e)[:300]}); eager')
            optimizer.zero_grad(set_to_none=True)
            step_model, use_compile = model, False
            loss = forward_backward(x, y)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    # 4. training. The first steps, at a very small learning rate, compile the model and time a step;
    #    the number of steps that fits before the deadline follows, and the schedule is laid over it.
    tokens_per_step = args.batch * T
    calibration = 3 if args.tiny else 30
    losses = []
    t0 = time.time()
    for s in range(calibration):
        losses.append(train_step(args.lr * (s + 1) / 1000).item())   # tiny LR: these steps only time
        if s == 4:
            sync()
            t_warm = time.time()                                     # compilation is in the first steps
    sync()
    sec_per_step = (time.time() - t_warm) / (calibration - 5) if calibration > 5 else (time.time() - t0) / calibration
    log(f'calibration: {calibration} steps in {time.time() - t0:.1f}s (compile {"on" if use_compile else "off"}), '
        f'{sec_per_step * 1000:.1f} ms/step, {tokens_per_step / sec_per_step:,.0f} tokens/s')
    eval_cost = 0.0
    if args.steps:
        steps = args.steps
    else:
        budget = args.deadline - (time.time() - START) - args.reserve
        # Each validation check costs about as much as 1.5% of a step per 1000 tokens; allow for it.
        steps = max(10, int(budget / (sec_per_step * 1.04)))
    warmup = max(1, int(args.warmup * steps))
    log(f'training: {steps} steps x {tokens_per_step:,} tokens = {steps * tokens_per_step / 1e6:.1f}M tokens '
        f'({steps * tokens_per_step / len(train_ids):.1f} epochs of {len(train_ids) / 1e6:.1f}M)')

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    val_check_tokens = 100_000 if not args.tiny else 5_000
    eval_every = max(1, steps // args.evals)
    best = {'val_loss': float('inf'), 'step': -1, 'state': None}
    curve = []
    t_train = time.time()
    window = []
    for step in range(steps):
        loss = train_step(lr_at(step))
        window.append(loss)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            train_loss = torch.stack(window).mean().item()
            window = []
            t_eval = time.time()
            val_loss, _ = evaluate(model, streams['valid'], T, 32, device, max_tokens=val_check_tokens, fp32=False)
            eval_cost += time.time() - t_eval
            curve.append({'step': step + 1, 'tokens': (step + 1) * tokens_per_step, 'lr': lr_at(step),
                          'train_loss': round(train_loss, 4), 'val_loss': round(val_loss, 4),
                          'seconds': round(time.time() - t_train, 1)})
            log(f'step {step + 1:6}/{steps}  lr {lr_at(step):.2e}  train {train_loss:.4f}  val {val_loss:.4f}  '
                f'({(step + 1) * tokens_per_step / (time.time() - t_train):,.0f} tokens/s)')
            if val_loss < best['val_loss']:
                best = {'val_loss': val_loss, 'step': step + 1,
                        'state': {k: v.detach().clone() for k, v in model.state_dict().items()}}
    train_seconds = time.time() - t_train
    if best['step'] != steps:
        log(f'keeping the weights of step {best["step"]} (best validation loss)')
    model.load_state_dict(best['state'])

    # 5. export: BF16 weights in Hugging Face layout; the tokenizer; generation defaults.
    bf16_state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    save_tokenizer(tok, out, cfg)
    (out / 'generation_config.json').write_text(json.dumps(
        {'bos_token_id': BOS_ID, 'eos_token_id': EOS_ID, 'pad_token_id': PAD_ID, 'do_sample': False}, indent=2) + '\n')
    exported_with = 'transformers'
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
        hf_cfg = {k: v for k, v in hf_config_dict(cfg).items() if k not in ('architectures', 'model_type', 'torch_dtype')}
        hf = LlamaForCausalLM(LlamaConfig(**hf_cfg)).to(torch.bfloat16)
        missing, unexpected = hf.load_state_dict(bf16_state, strict=False)
        assert not unexpected and set(missing) <= {'lm_head.weight'}, (missing, unexpected)
        hf.tie_weights()
        hf.generation_config.pad_token_id = PAD_ID
        hf.save_pretrained(out, safe_serialization=True)
    except ImportError as e:
        # No transformers: the same files by hand (config.json + model.safetensors, tied head left out).
        log(f'transformers unavailable ({e}); writing config.json and model.safetensors directly')
        exported_with = 'safetensors'
        from safetensors.torch import save_file
        (out / 'config.json').write_text(json.dumps(hf_config_dict(cfg), indent=2) + '\n')
        save_file({k: v.contiguous() for k, v in bf16_state.items() if k != 'lm_head.weight'},
                  str(out / 'model.safetensors'), metadata={'format': 'pt'})
    # generation_config.json written above is the one that counts (save_pretrained may rewrite it)
    (out / 'generation_config.json').write_text(json.dumps(
        {'bos_token_id': BOS_ID, 'eos_token_id': EOS_ID, 'pad_token_id': PAD_ID, 'do_sample': False}, indent=2) + '\n')
    log(f'exported to {out} with {exported_with}: ' + ', '.join(sorted(p.name for p in out.iterdir())))

    # 6. FP32 evaluation: the trained fp32 weights, and the shipped BF16 weights computed in fp32.
    model.eval()
    results = {}
    fp32_state = {k: v.clone() for k, v in model.state_dict().items()}
    for weights in ('fp32', 'bf16'):
        if weights == 'bf16':
            model.load_state_dict({k: v.float() for k, v in bf16_state.items()})
        for split in ('valid', 'test'):
            nll, n = evaluate(model, streams[split], T, 32, device, fp32=True)
            results[f'{split}_{weights}_weights'] = {
                'nll_per_token': round(nll, 5), 'perplexity': round(math.exp(nll), 3), 'tokens': n,
                'bytes': text_bytes[split], 'bits_per_byte': round(nll * n / math.log(2) / text_bytes[split], 4)}
            log(f'{split:5} ({weights} weights, fp32 compute): perplexity {math.exp(nll):.3f}, '
                f'{nll * n / math.log(2) / text_bytes[split]:.4f} bits/byte over {n:,} tokens')

    # The exported files, reloaded by transformers, must compute what this script computes.
    check = {}
    try:
        from transformers import LlamaForCausalLM
        hf = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).to(device).eval()
        ids = streams['test'][:T].long()[None].to(device)
        with torch.no_grad():
            ours, theirs = model(ids), hf(ids).logits
        diff = (ours - theirs).abs().max().item()
        check = {'max_abs_logit_difference': diff, 'ok': diff < 1e-3}
        log(f'transformers reload check: max |logit difference| {diff:.2e} ({"ok" if diff < 1e-3 else "MISMATCH"})')
        hf_greedy = hf.generate(torch.tensor([tok.encode(PROMPTS[0]).ids], device=device), max_new_tokens=40,
                                do_sample=False, pad_token_id=PAD_ID)
        check['transformers_generate'] = tok.decode(hf_greedy[0].tolist(), skip_special_tokens=True)
    except Exception as e:  # noqa: BLE001 -- the check is a report, not a reason to lose the run
        check = {'error': repr(e)[:500]}
        log(f'transformers reload check failed: {e!r}')

    continuations = []
    for prompt in PROMPTS:
        text = greedy(model, tok, prompt, 64, device)
        continuations.append({'prompt': prompt, 'greedy': text})
        log(f'greedy: {text!r}')
    if 'transformers_generate' in check:
        check['same_as_ours'] = check['transformers_generate'] == greedy(model, tok, PROMPTS[0], 40, device)
    model.load_state_dict(fp32_state)

    metrics = {
        'config': asdict(cfg), 'parameters': n_params, 'parameters_without_embedding': n_params - n_embed,
        'seed': args.seed, 'args': vars(args), 'torch': torch.__version__, 'transformers': hf_version,
        'device': torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu',
        'compiled': use_compile, 'steps': steps, 'tokens_per_step': tokens_per_step,
        'calibration_steps': calibration, 'tokens_trained': (calibration + steps) * tokens_per_step, 'best_step': best['step'],
        'train_seconds': round(train_seconds, 1), 'tokens_per_second': round(steps * tokens_per_step / train_seconds),
        'corpus_tokens': {k: len(v) for k, v in streams.items()}, 'corpus_bytes': text_bytes,
        'evaluation': results, 'curve': curve, 'greedy': continuations, 'export_check': check,
        'total_seconds': round(time.time() - START, 1),
    }
    (out / 'metrics.json').write_text(json.dumps(metrics, indent=1) + '\n')
    log(f'done in {time.time() - START:.0f}s')


if __name__ == '__main__':
    main()
