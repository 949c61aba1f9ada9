"""Search figures: valid PNGs, one panel per varying name, axes on the sampling scale."""

import matplotlib as mpl
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from bnjax.search import plots, scales
from bnjax.search.results import Results
from bnjax.space import Choice, Fixed, IntUniform, LogUniform, OneMinusLogUniform, Space

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
VARYING = ('learning_rate', 'beta1', 'hidden_units', 'optimizer')
NUM_TRIALS, EPOCHS, DIVERGED = 30, 8, (4, 17)


def fake_results(num_trials: int = NUM_TRIALS, vary: bool = True) -> Results:
  """A search without training: log lr, 1-log beta1, int width, categorical optimizer."""
  rng = np.random.default_rng(0)
  n = num_trials
  table = {
    'learning_rate': 10.0 ** rng.uniform(-4, -1, n) if vary else np.full(n, 1e-3),
    'beta1': 1 - 10.0 ** rng.uniform(-3, -1, n) if vary else np.full(n, 0.9),
    'hidden_units': rng.integers(16, 257, n) if vary else np.full(n, 64),
    'optimizer': rng.choice(['adam', 'momentum', 'sgd'], n) if vary else np.full(n, 'adam'),
    'batch_size': np.full(n, 64),  # searched but fixed
    'l2': np.full(n, 1e-4),  # searched, log, but every trial drew the same
  }
  quality = -np.abs(np.log10(table['learning_rate']) + 2.5) + 0.1 * (table['optimizer'] == 'adam')
  rows, curves = [], {'train_loss': [], 'dev_loss': [], 'dev_accuracy': []}
  epochs = np.arange(1, EPOCHS + 1)
  for i in range(n):
    final = float(0.6 + 0.1 * quality[i] + 0.01 * rng.normal())
    accuracy_curve = final - 0.3 * np.exp(-epochs / 2)
    loss_curve = 2.0 * np.exp(-epochs / 3) + (1 - final)
    status = 'diverged' if i in DIVERGED else 'ok'
    if status == 'diverged':
      accuracy_curve = np.where(epochs > 2, np.nan, accuracy_curve)
      loss_curve = np.where(epochs > 2, np.nan, loss_curve)
    nan = float('nan')
    rows.append(
      {
        'trial_id': i,
        **{k: v[i].item() for k, v in table.items()},
        'round': i // 15,
        'bucket': 0,
        'status': status,
        'dev_accuracy': final if status == 'ok' else nan,
        'dev_accuracy_std': 0.0,
        'dev_loss': float(loss_curve[-1]) if status == 'ok' else nan,
        'best_epoch': EPOCHS - 1 if status == 'ok' else -1,
        'train_loss': float(loss_curve[-1]) if status == 'ok' else nan,
        'diverged_step': 20 if status == 'diverged' else -1,
        'test_accuracy': nan,
      }
    )
    curves['dev_accuracy'].append(accuracy_curve)
    curves['train_loss'].append(loss_curve)
    curves['dev_loss'].append(loss_curve + 0.1)
  space = Space(
    {
      'learning_rate': LogUniform(1e-4, 1e-1),
      'beta1': OneMinusLogUniform(0.9, 0.999),
      'hidden_units': IntUniform(16, 256),
      'optimizer': Choice(('adam', 'momentum', 'sgd')),
      'batch_size': Fixed(64),
      'l2': LogUniform(1e-5, 1e-3),
    }
  )
  return Results(
    rows=rows,
    curves={k: np.asarray(v) for k, v in curves.items()},
    hyperparameters=space.names,
    searched=space.names,
    space=space,
    extra_columns=('round',),
  )


def assert_png(path):
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[2] in (3, 4)
  assert image.shape[0] > 100 and image.shape[1] > 100
  assert np.ptp(image[..., :3]) > 0.5  # something was drawn, not a blank canvas


def panels(fig):
  return {ax.get_label(): ax for ax in fig.axes}


@pytest.mark.parametrize(
  'plot', [plots.plot_hyperparameters, plots.plot_learning_curves, plots.plot_parallel_coordinates]
)
def test_each_plot_writes_a_png(tmp_path, plot):
  path = plot(fake_results(), tmp_path / 'figure.png')
  assert path == tmp_path / 'figure.png'
  assert_png(path)


def test_plot_all_writes_the_three_figures(tmp_path):
  paths = plots.plot_all(fake_results(), tmp_path / 'new_dir')
  assert [p.name for p in paths] == [
    'hyperparameters.png',
    'learning_curves.png',
    'parallel_coordinates.png',
  ]
  for path in paths:
    assert_png(path)
  assert sorted(p.name for p in (tmp_path / 'new_dir').iterdir()) == sorted(plots.FIGURES)


def test_a_failed_save_leaves_the_previous_figure(tmp_path, monkeypatch):
  path = tmp_path / 'figure.png'
  path.write_bytes(b'the previous figure')
  monkeypatch.setattr(Figure, 'savefig', lambda *args, **kwargs: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    plots.plot_hyperparameters(fake_results(), path)
  assert path.read_bytes() == b'the previous figure'
  assert [p.name for p in tmp_path.iterdir()] == ['figure.png'], 'no temporary file left'


def test_varying_names_skip_fixed_equal_and_extra_columns():
  results = fake_results()
  assert scales.varying_names(results) == VARYING
  # 'round' varies, but is an extra column: skipped even where it is searched.
  assert len(set(results.column('round'))) > 1
  results.searched = (*results.searched, 'round')
  assert scales.varying_names(results) == VARYING
  assert scales.varying_names(fake_results(vary=False)) == ()


def test_one_panel_per_varying_name_on_its_scale():
  fig = plots.hyperparameters_figure(fake_results())
  axes = panels(fig)
  assert set(axes) == set(VARYING) and len(fig.axes) == len(VARYING)
  assert axes['learning_rate'].get_xscale() == 'log'
  assert axes['beta1'].get_xscale() == 'log'
  assert axes['beta1'].xaxis_inverted()  # beta grows to the right
  assert axes['beta1'].get_xlabel().startswith('1 - beta1')
  assert axes['hidden_units'].get_xscale() == 'linear'
  ticks = [t.get_text() for t in axes['optimizer'].get_xticklabels()]
  assert ticks == ['adam', 'momentum', 'sgd']


def test_one_minus_log_panel_plots_one_minus_beta():
  results = fake_results()
  ax = panels(plots.hyperparameters_figure(results))['beta1']
  finished = [row for row in results.rows if row['status'] == 'ok']
  x = ax.collections[0].get_offsets()[:, 0]
  np.testing.assert_allclose(np.sort(x), np.sort([1 - row['beta1'] for row in finished]))


def test_diverged_trials_sit_below_all_finished_ones_and_best_is_starred():
  results = fake_results()
  ax = panels(plots.hyperparameters_figure(results))['learning_rate']
  finished, diverged, best = (c.get_offsets() for c in ax.collections)
  assert len(finished) == NUM_TRIALS - len(DIVERGED) and len(diverged) == len(DIVERGED)
  np.testing.assert_allclose(
    np.sort(diverged[:, 0]), np.sort([results.rows[i]['learning_rate'] for i in DIVERGED])
  )
  assert np.all(np.isfinite(diverged)) and diverged[:, 1].max() < finished[:, 1].min()
  top = results.best(1)[0]
  np.testing.assert_allclose(best[0], [top['learning_rate'], top['dev_accuracy']])


def test_nothing_varies_still_writes_a_figure(tmp_path):
  results = fake_results(vary=False)
  fig = plots.hyperparameters_figure(results)
  assert len(fig.axes) == 1 and 'varies' in fig.axes[0].texts[0].get_text()
  for path in plots.plot_all(results, tmp_path):
    assert_png(path)


def test_normalize_puts_values_on_their_distributions_scale():
  results = fake_results()
  normalize = lambda name, values, **kw: scales.normalize(results, name, values, **kw)
  np.testing.assert_allclose(normalize('learning_rate', [1e-4, 1e-3, 1e-2]), [0, 0.5, 1])
  np.testing.assert_allclose(normalize('beta1', [0.9, 0.99, 0.999]), [0, 0.5, 1])
  np.testing.assert_allclose(normalize('hidden_units', [10, 20, 50]), [0, 0.25, 1])
  np.testing.assert_allclose(normalize('optimizer', ['sgd', 'adam', 'momentum']), [1, 0, 0.5])
  np.testing.assert_allclose(normalize('learning_rate', [3.0, 3.0]), [0.5, 0.5])
  np.testing.assert_allclose(normalize('learning_rate', [1e-3], reference=[1e-4, 1e-2]), [0.5])
  # The scale is the distribution's: without a space, every number is linear.
  results.space = None
  assert scales.scale_of(results, 'learning_rate') == 'linear'
  np.testing.assert_allclose(normalize('learning_rate', [1e-4, 1e-3, 1e-2]), [0, 1 / 11, 1])
  assert scales.scale_of(results, 'optimizer') == 'categorical'  # strings are, whatever


def test_scale_of_reads_the_distribution():
  results = fake_results()
  by_name = {name: scales.scale_of(results, name) for name in results.searched}
  assert by_name == {name: dist.scale for name, dist in results.space.items()}


def test_normalize_real_columns_span_unit_interval():
  results = fake_results()
  for name in VARYING:
    t = scales.normalize(results, name, results.column(name))
    assert t.min() == 0 and t.max() == 1


def test_parallel_coordinates_lines_follow_the_top_trials():
  results = fake_results()
  k = 10
  fig = plots.parallel_coordinates_figure(results, k=k)
  ax = fig.axes[0]
  lines = [line for line in ax.lines if len(line.get_xdata()) == len(VARYING) + 1]
  assert len(lines) == k
  best = results.best(1)[0]  # drawn last, on top
  expected = scales.normalize(
    results, 'learning_rate', [best['learning_rate']], results.column('learning_rate')
  )
  np.testing.assert_allclose(lines[-1].get_ydata()[0], expected[0])
  assert lines[-1].get_ydata()[-1] == 1.0  # the best accuracy tops its axis
  texts = {t.get_text() for t in ax.texts}
  low_lr = min(results.column('learning_rate'))
  assert scales.label(low_lr, 'log') in texts
  assert 'adam' in texts and 'sgd' in texts
  assert any(a.get_label() == '<colorbar>' for a in fig.axes)


def test_parallel_coordinates_draws_only_finished_trials():
  fig = plots.parallel_coordinates_figure(fake_results(), k=NUM_TRIALS)
  lines = [line for line in fig.axes[0].lines if len(line.get_xdata()) == len(VARYING) + 1]
  assert len(lines) == NUM_TRIALS - len(DIVERGED)
  assert all(np.all(np.isfinite(line.get_ydata())) for line in lines)


def test_learning_curves_show_top_k_with_their_ids():
  results = fake_results()
  fig = plots.learning_curves_figure(results, k=3)
  ax_accuracy, ax_loss = fig.axes
  top = results.best(3)
  curves = [line for line in ax_accuracy.lines if len(line.get_xdata()) == EPOCHS]
  assert len(curves) == 3
  np.testing.assert_allclose(
    curves[0].get_ydata(), results.curves['dev_accuracy'][top[0]['trial_id']]
  )
  np.testing.assert_allclose(
    ax_loss.lines[0].get_ydata(), results.curves['train_loss'][top[0]['trial_id']]
  )
  labels = [text.get_text() for text in fig.legends[0].get_texts()]
  assert len(labels) == 3
  for row, label in zip(top, labels, strict=True):
    assert f'trial {row["trial_id"]}' in label and 'learning_rate=' in label


def test_plots_leave_rc_params_alone(tmp_path):
  before = dict(mpl.rcParams)
  plots.plot_hyperparameters(fake_results(), tmp_path / 'h.png')
  assert dict(mpl.rcParams) == before


def test_pruned_trials_are_drawn_hollow_at_their_accuracy_not_as_diverged():
  results = fake_results()
  pruned = [1, 2, 3]
  for i in pruned:
    results.rows[i]['status'] = 'pruned'
  fig = plots.hyperparameters_figure(results)
  assert '2 diverged, 3 pruned' in fig._suptitle.get_text()
  ax = panels(fig)['learning_rate']
  hollow = [
    c
    for c in ax.collections
    if np.size(c.get_facecolor()) == 0 or not c.get_facecolor()[:, 3].any()
  ]
  assert len(hollow) == 1
  np.testing.assert_allclose(
    hollow[0].get_offsets()[:, 1], [results.rows[i]['dev_accuracy'] for i in pruned]
  )


def test_schedule_figure_draws_each_explored_value_over_the_generations(tmp_path):
  results = fake_results()
  results.info['schedule'] = [
    {'epochs': [0, 2], 'trial_id': 3, 'learning_rate': 1e-3, 'beta1': 0.9},
    {'epochs': [2, 4], 'trial_id': 5, 'learning_rate': 1.2e-3, 'beta1': 0.92},
  ]
  fig = plots.schedule_figure(results)
  axes = [ax for ax in fig.axes if ax.get_title()]
  assert [ax.get_title() for ax in axes] == ['learning_rate', 'beta1']
  assert axes[0].get_yscale() == 'log'  # each on its distribution's scale
  labels = {text.get_text() for text in axes[0].texts}
  assert labels == {'3', '5'}  # the member that trained each generation
  assert_png(plots.plot_schedule(results, tmp_path / 'schedule.png'))
