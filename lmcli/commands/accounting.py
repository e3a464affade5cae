"""``lmcli accounting``: one model's costs as tables and a FLOP bar chart, several side by side, or JSON."""

from __future__ import annotations

from rich.table import Table

from lmcli.accounting.report import GIB, Setup, account, account_models
from lmcli.errors import LmcliError
from lmcli.json_output import dumps
from lmcli.ui.console import console

FLOP_LABELS = {
    "qkv_projections": "Q/K/V projections",
    "attention_scores": "QKᵀ scores",
    "attention_values": "attention · V",
    "output_projection": "output projection",
    "feed_forward": "feed-forward",
    "lm_head": "LM head",
}
PARAM_LABELS = {
    "token_embeddings": "token embeddings",
    "attention": "attention (Q, K, V, output)",
    "feed_forward": "feed-forward",
    "norms": "RMSNorm gains",
    "lm_head": "LM head",
}


def run(
    model: str | None, compare: str | None, context_length: int | None, batch_size: int, micro_batch_size: int | None,
    shards: int, memory_gib: float, dtype: str, hardware: str, mfu: float, steps: int, as_json: bool,
) -> None:
    """One model (default tinystories) or a comma-separated comparison."""
    setup = Setup(context_length=context_length, batch_size=batch_size, micro_batch_size=micro_batch_size, shards=shards,
                  memory_gib=memory_gib, dtype=dtype.lower(), hardware=hardware.lower(), mfu=mfu, steps=steps)
    if model and compare:
        raise LmcliError("give either --model or --compare, not both")
    if compare is not None:
        reports = account_models([name.strip() for name in compare.split(",") if name.strip()], setup)
        if as_json:
            print(dumps({"models": reports}))
        else:
            render_comparison(reports)
        return
    report = account(model or "tinystories", setup)
    if as_json:
        print(dumps(report))
    else:
        render(report)


def si(n: float, unit: str = "") -> str:
    """4.51e12 -> '4.51 T' + unit."""
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            value = n / factor
            return f"{value:,.0f} {prefix}{unit}" if value >= 100 else f"{value:.3g} {prefix}{unit}"
    return f"{n:.3g} {unit}".rstrip()


def human_bytes(n_bytes: float) -> str:
    """Bytes in GiB, or MiB below 1 GiB so small models keep their digits."""
    return f"{n_bytes / GIB:,.2f} GiB" if n_bytes >= GIB else f"{n_bytes / 2**20:,.2f} MiB"


def duration(seconds: float) -> str:
    for size, unit in ((86_400, "days"), (3_600, "hours"), (60, "minutes")):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def bar(share: float, width: int = 30) -> str:
    """A horizontal bar of ``share`` × width cells, with eighth-cell resolution."""
    eighths = round(share * width * 8)
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def describe(model: dict) -> str:
    switches = [f"{k}={model[k]}" for k, default in (("norm", "pre"), ("position", "rope"), ("ffn", "swiglu")) if model[k] != default]
    if model["tie_embeddings"]:
        switches.append("tied embeddings")
    shape = (
        f"{model['num_layers']} layers, d_model {model['d_model']}, {model['num_heads']} heads, d_ff {model['d_ff']}, "
        f"vocab {model['vocab_size']:,}, context {model['context_length']:,}"
    )
    return f"[bold]{model['name']}[/]: {shape}" + (f" ({', '.join(switches)})" if switches else "")


# ---------------------------------------------------------------- one model


def render(report: dict) -> None:
    model, T = report["model"], report["model"]["context_length"]
    console.print(describe(model))
    console.print(params_table(report["params"]))
    console.print(flops_table(report["forward_flops"], T))
    console.print(memory_table(report["memory"]))
    t = report["training"]
    console.print(
        f"[bold]Training[/] {t['steps']:,} steps × batch {t['batch_size']:,} × {T:,} tokens "
        f"= {si(t['total_flops'], 'FLOP')} (forward + 2× backward + AdamW) on one {t['hardware'].upper()} "
        f"at {t['mfu']:.0%} MFU of {si(t['peak_flops_per_second'], 'FLOP/s')} {t['dtype']}: "
        f"[bold]{duration(t['seconds'])}[/]",
        highlight=False,
    )


def params_table(params: dict[str, int]) -> Table:
    table = Table(title="Parameters", title_justify="left")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    table.add_column("share", justify="right")
    for key, label in PARAM_LABELS.items():
        table.add_row(label, f"{params[key]:,}", f"{params[key] / params['total']:.1%}")
    table.add_row("[bold]total", f"[bold]{params['total']:,}", f"[bold]{si(params['total'])}")
    return table


def flops_table(flops: dict[str, int], seq_len: int) -> Table:
    table = Table(title=f"Forward FLOPs of one {seq_len:,}-token sequence (matmuls)", title_justify="left")
    table.add_column("component")
    table.add_column("FLOPs", justify="right")
    table.add_column("share", justify="right")
    table.add_column("where the FLOPs go", style="cyan", min_width=30)
    for key, label in FLOP_LABELS.items():
        share = flops[key] / flops["total"]
        table.add_row(label, f"{flops[key]:,}", f"{share:.1%}", bar(share))
    table.add_row("[bold]total", f"[bold]{flops['total']:,}", f"[bold]{si(flops['total'], 'FLOP')}", "")
    table.add_row("backward (2× forward)", f"{2 * flops['total']:,}", "", "")
    return table


def memory_table(memory: dict) -> Table:
    sharded = f", FSDP over {memory['shards']} devices" if memory["shards"] > 1 else ""
    title = f"Peak training memory per device (AdamW, {memory['dtype']} activations{sharded})"
    table = Table(title=title, title_justify="left", min_width=60)
    table.add_column("part")
    table.add_column("size", justify="right")
    rows = {
        "parameters (fp32)": memory["parameters"],
        "gradients (fp32)": memory["gradients"],
        "AdamW state (m, v)": memory["optimizer_state"],
        f"activations (micro-batch {memory['micro_batch_size']:,})": memory["activations"],
    }
    for label, size in rows.items():
        table.add_row(label, human_bytes(size))
    table.add_row("[bold]peak", f"[bold]{human_bytes(memory['peak'])}")
    table.add_row("peak = a · micro-batch + b", f"{human_bytes(memory['bytes_per_sequence'])} · micro-batch + {human_bytes(memory['fixed_bytes'])}")
    table.add_row(f"largest micro-batch in {human_bytes(memory['budget_bytes'])}", f"[bold]{memory['max_micro_batch_size']:,}")
    return table


# ---------------------------------------------------------------- several models


def render_comparison(reports: list[dict]) -> None:
    table = Table(title="Side by side", title_justify="left")
    table.add_column("")
    for report in reports:
        table.add_column(report["model"]["name"], justify="right")

    def row(label: str, cell) -> None:
        table.add_row(label, *(cell(r) for r in reports))

    row("layers / d_model / heads", lambda r: f"{r['model']['num_layers']} / {r['model']['d_model']} / {r['model']['num_heads']}")
    row("context length", lambda r: f"{r['model']['context_length']:,}")
    row("parameters", lambda r: si(r["params"]["total"]))
    row("forward FLOPs / sequence", lambda r: si(r["forward_flops"]["total"], "FLOP"))
    for key, label in FLOP_LABELS.items():
        row(f"  {label}", lambda r, key=key: f"{r['forward_flops'][key] / r['forward_flops']['total']:.1%}")
    micro = reports[0]["memory"]["micro_batch_size"]
    row(f"peak memory (micro-batch {micro:,})", lambda r: human_bytes(r["memory"]["peak"]))
    row(f"largest micro-batch in {human_bytes(reports[0]['memory']['budget_bytes'])}", lambda r: f"{r['memory']['max_micro_batch_size']:,}")
    t = reports[0]["training"]
    row(f"{t['steps']:,} steps, {t['hardware'].upper()} {t['dtype']} @ {t['mfu']:.0%} MFU", lambda r: duration(r["training"]["seconds"]))
    console.print(table)
    for report in reports:
        flops = report["forward_flops"]
        console.print(f"[bold]{report['model']['name']}[/] FLOPs:")
        for key, label in FLOP_LABELS.items():
            share = flops[key] / flops["total"]
            console.print(f"  {label:<18} [cyan]{bar(share, 40):<40}[/] {share:6.1%}", highlight=False)
