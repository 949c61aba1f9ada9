"""The suite's figures as a markdown table and a PNG."""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.end_to_end import SEARCH_LABELS  # noqa: E402

# The targets, drawn on the figure: a share of the matmul peak, and a speed-up.
PEAK_TARGET = 0.6
SPEEDUP_TARGET = 3.0


def _range(row: dict, key='ms') -> str:
  return f'{row[f"{key}_per_trial_epoch"]:.1f} ({row["ms_min"]:.1f}-{row["ms_max"]:.1f})'


def markdown(figures: dict) -> str:
  meta = figures['machine']
  lines = [
    f'Machine: {meta["device"]} ({meta["cpu"]}, {meta["cores"]} cores), jax {meta["jax"]}, '
    f'torch {meta.get("torch", "-")}; command: `{meta["command"]}`; '
    f'1-minute load {meta["load_start"]:.1f} at the start, {meta["load_end"]:.1f} at the end.',
    '',
  ]
  fixed = figures.get('fixed_shape')
  if fixed:
    peak = fixed['matmul_peak']
    lines += [
      f'Fixed shape: BN-MLP {fixed["shape"]}, batch 128, Adam, MNIST-1D; '
      f'{fixed["gflop_per_trial_epoch"]:.2f} GFLOP per trial-epoch; matmul peak '
      f'(`jit(jnp.dot)`, 1024^2 float32) {peak["gflops"]:.0f} GFLOP/s (load {peak["load"]:.1f}).',
      '',
      '| runner | ms per trial-epoch, median (range) | GFLOP/s | of peak | load | compile s |',
      '| --- | --- | --- | --- | --- | --- |',
    ]
    for name, row in fixed['runners'].items():
      compile_s = row.get('compile_seconds')
      lines.append(
        f'| {name} | {_range(row)} | {row["gflops"]:.0f} | {100 * row["peak_fraction"]:.0f}% | '
        f'{row["load"]:.1f} | {"-" if compile_s is None else f"{compile_s:.1f}"} |'
      )
    lines.append('')
  e2e = figures.get('end_to_end')
  if e2e:
    lines += [
      f'End to end: {e2e["num_trials"]} trials x {e2e["epochs"]} epochs of the default space, '
      f'seeds {e2e["seeds"]}; wall seconds per search (each in its own process) and the '
      "dev-selected winner's test accuracy.",
      '',
      '| search | seconds, median (range) | test accuracy, median (range) | load |',
      '| --- | --- | --- | --- |',
    ]
    for name, row in e2e['runs'].items():
      lines.append(
        f'| {name} | {row["median"]:.1f} ({row["min"]:.1f}-{row["max"]:.1f}) | '
        f'{row["test_accuracy_median"]:.3f} ({row["test_accuracy_min"]:.3f}-'
        f'{row["test_accuracy_max"]:.3f}) | {row["load"]:.1f} |'
      )
    for name, ratio in e2e['speedup'].items():
      lines.append(f'\nSpeed-up over Optuna + PyTorch eager, {name}: {ratio:.2f}x (medians).')
    lines.append('')
  scaling = figures.get('scaling')
  if scaling:
    lines += [
      f'Scaling: N trials of the default space, {scaling[0]["epochs"]} epochs, one process each.',
      '',
      '| N | seconds | trials/s | compiles | compile s | peak memory MB | load |',
      '| --- | --- | --- | --- | --- | --- | --- |',
    ]
    for row in scaling:
      lines.append(
        f'| {row["num_trials"]} | {row["seconds"]:.1f} | {row["trials_per_second"]:.2f} | '
        f'{row["compiles"]} | {row["compile_seconds"]:.1f} | {row["peak_memory_mb"]:.0f} | '
        f'{row["load"]:.1f} |'
      )
  return '\n'.join(lines) + '\n'


def figure(figures: dict, path: str) -> None:
  panels = [name for name in ('fixed_shape', 'end_to_end', 'scaling') if figures.get(name)]
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
  for ax, name in zip(axes[0], panels, strict=True):
    if name == 'fixed_shape':
      runners = figures[name]['runners']
      names = list(runners)
      ax.barh(names, [100 * runners[n]['peak_fraction'] for n in names])
      ax.axvline(100 * PEAK_TARGET, color='gray', linestyle='--', label='target')
      ax.set_xlabel('% of the measured matmul peak')
      ax.set_title('3 x 256, batch 128, Adam')
      ax.invert_yaxis()
      ax.legend(loc='lower right')
    elif name == 'end_to_end':
      runs = figures[name]['runs']
      names = list(runs)
      medians = [runs[n]['median'] for n in names]
      errors = [
        [m - runs[n]['min'] for n, m in zip(names, medians, strict=True)],
        [runs[n]['max'] - m for n, m in zip(names, medians, strict=True)],
      ]
      ax.barh([SEARCH_LABELS.get(n, n) for n in names], medians, xerr=errors)
      if 'optuna_torch' in runs:
        target = runs['optuna_torch']['median'] / SPEEDUP_TARGET
        ax.axvline(target, color='gray', linestyle='--', label=f'{SPEEDUP_TARGET:g}x the peer')
        ax.legend(loc='upper right')
      ax.set_xlabel('seconds per search (median, range over seeds)')
      ax.set_title('default search, end to end')
      ax.invert_yaxis()
    else:
      rows = figures[name]
      ax.plot([r['num_trials'] for r in rows], [r['trials_per_second'] for r in rows], 'o-')
      ax.set_xscale('log')
      ax.set_xlabel('trials (N)')
      ax.set_ylabel('trials per second')
      ax.set_title(f'scaling, {rows[0]["epochs"]} epochs')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
