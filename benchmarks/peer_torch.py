"""The peer: the same BN-MLP trained by PyTorch, eager or `torch.compile`d.

It follows bnjax's conventions so that both sides train the same thing:
linear layers before BN have no bias, BN normalizes with the batch's
statistics and keeps running averages with momentum 0.99 (PyTorch's 0.01),
He initialization (variance 2 / fan_in, the output layer too, zero biases),
inverted dropout after the activation, Adam with epsilon outside the root,
the learning rate decayed per epoch (`inverse_time`: lr / (1 + decay * epoch);
`exponential`: lr * (1 - decay) ** epoch), the last partial batch dropped,
and the dev split evaluated after every epoch.
"""

import time

import numpy as np
import torch
from torch import nn


def _network(in_features: int, hidden: list[int], num_classes: int, keep_prob: float):
  layers, fan_in = [], in_features
  for width in hidden:
    linear = nn.Linear(fan_in, width, bias=False)
    nn.init.normal_(linear.weight, std=float(np.sqrt(2.0 / fan_in)))
    layers += [linear, nn.BatchNorm1d(width, momentum=0.01, eps=1e-5), nn.ReLU()]
    if keep_prob < 1:
      layers.append(nn.Dropout(1.0 - keep_prob))
    fan_in = width
  output = nn.Linear(fan_in, num_classes)
  nn.init.normal_(output.weight, std=float(np.sqrt(2.0 / fan_in)))
  nn.init.zeros_(output.bias)
  return nn.Sequential(*layers, output)


def _rate_factor(schedule: str, decay: float):
  if schedule == 'inverse_time':
    return lambda epoch: 1.0 / (1.0 + decay * epoch)
  if schedule == 'exponential':
    return lambda epoch: (1.0 - decay) ** epoch
  return lambda epoch: 1.0


class Trial:
  """One configuration (a dict of bnjax hyperparameter values), trained epoch by epoch."""

  def __init__(self, hp: dict, splits, *, seed: int, compiled: bool = False):
    if hp.get('optimizer', 'adam') != 'adam' or not hp.get('batch_norm', True):
      raise ValueError('the PyTorch peer trains the BN-MLP with Adam only')
    torch.manual_seed(seed)
    self.generator = torch.Generator().manual_seed(seed)
    depth, keep_prob = int(hp['num_layers']), float(hp['keep_prob'])
    hidden = [int(hp.get(f'hidden_units_{k + 1}', hp['hidden_units'])) for k in range(depth)]
    self.model = _network(splits.x_train.shape[1], hidden, splits.num_classes, keep_prob)
    self.forward = torch.compile(self.model) if compiled else self.model
    self.optimizer = torch.optim.Adam(
      self.model.parameters(),
      lr=float(hp['learning_rate']),
      betas=(float(hp['beta1']), float(hp['beta2'])),
      eps=float(hp['eps']),
      weight_decay=0.0,
    )
    self.schedule = torch.optim.lr_scheduler.LambdaLR(
      self.optimizer, _rate_factor(hp['lr_schedule'], float(hp['lr_decay']))
    )
    self.batch_size = int(hp['batch_size'])
    self.data = {
      name: torch.as_tensor(np.asarray(array))
      for name, array in zip(('x_train', 'y_train', 'x_dev', 'y_dev'), splits[:4], strict=True)
    }
    self.data['y_train'] = self.data['y_train'].long()
    self.loss = nn.CrossEntropyLoss()

  def epoch(self) -> float:
    """One pass over a fresh permutation of the training split; returns the dev accuracy."""
    self.model.train()
    x, y = self.data['x_train'], self.data['y_train']
    steps = len(y) // self.batch_size
    order = torch.randperm(len(y), generator=self.generator)[: steps * self.batch_size]
    for rows in order.view(steps, self.batch_size):
      self.optimizer.zero_grad(set_to_none=True)
      loss = self.loss(self.forward(x[rows]), y[rows])
      loss.backward()
      self.optimizer.step()
    self.schedule.step()
    return self.accuracy(self.data['x_dev'], self.data['y_dev'])

  @torch.no_grad()
  def accuracy(self, x, y) -> float:
    self.model.eval()
    logits = self.forward(torch.as_tensor(np.asarray(x)))
    return float((logits.argmax(-1) == torch.as_tensor(np.asarray(y)).long()).float().mean())


def epoch_seconds(hp: dict, splits, *, epochs: int, repeats: int, compiled: bool) -> dict:
  """Seconds per epoch of one trial: every epoch after the first, and the first on its own."""
  trial = Trial(hp, splits, seed=0, compiled=compiled)
  start = time.perf_counter()
  trial.epoch()  # torch.compile compiles here (train and eval graphs)
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats * epochs):
    start = time.perf_counter()
    trial.epoch()
    times.append(time.perf_counter() - start)
  return {'first_epoch': first, 'epochs': times}
