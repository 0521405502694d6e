"""PNG overview of a PPG-DaLiA subject: what was done when, how the wrist moved, how the
heart responded, and what each activity looks like in the frequency domain."""

import numpy as np

from muse_common import activities
from muse_sensors import dalia

# One colour per activity id, shared by every panel.
COLOURS = ('#bbbbbb', '#4c72b0', '#dd8452', '#55a868', '#c44e52', '#8172b3', '#937860',
           '#da8bc3', '#ccb974')


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _activity_runs(activity):
    """(start_s, end_s, id) of each run of equal activity ids (4 Hz labels)."""
    change = np.flatnonzero(np.diff(activity)) + 1
    bounds = np.concatenate([[0], change, [len(activity)]])
    return [(a / dalia.ACTIVITY_HZ, b / dalia.ACTIVITY_HZ, int(activity[a]))
            for a, b in zip(bounds[:-1], bounds[1:])]


def plot_subject(subject, path, spectrum_window_s=8.0):
    """Write a four-panel PNG of ``subject`` (a :class:`dalia.Subject`) to ``path``."""
    plt = _pyplot()
    fig = plt.figure(figsize=(13, 9))
    grid = fig.add_gridspec(4, 2, width_ratios=(3, 1), height_ratios=(0.5, 2, 1.3, 1.3))
    ax_act = fig.add_subplot(grid[0, 0])
    ax_acc = fig.add_subplot(grid[1, 0], sharex=ax_act)
    ax_hr = fig.add_subplot(grid[2, 0], sharex=ax_act)
    ax_env = fig.add_subplot(grid[3, 0], sharex=ax_act)
    ax_spec = fig.add_subplot(grid[:, 1])
    minutes = 1 / 60.0

    runs = _activity_runs(subject.activity)
    for start, end, a in runs:
        ax_act.axvspan(start * minutes, end * minutes, color=COLOURS[a], lw=0)
        if (end - start) > subject.duration_s / 40 and a:
            ax_act.text((start + end) / 2 * minutes, 0.5, activities.ACTIVITY_NAMES[a], ha='center',
                        va='center', fontsize=7, rotation=90 if end - start < subject.duration_s / 15 else 0)
    ax_act.set(yticks=[], title=f'{subject.name}: activity (grey = transient)')

    t_acc = np.arange(len(subject.acc_g)) / dalia.ACC_HZ * minutes
    step = max(1, len(t_acc) // 20000)   # enough points to see the envelope
    for axis, name in enumerate('xyz'):
        ax_acc.plot(t_acc[::step], subject.acc_g[::step, axis], lw=0.4, label=name)
    ax_acc.set(ylabel='wrist ACC [g]', ylim=(-2.1, 2.1))
    ax_acc.legend(loc='upper right', ncol=3, fontsize=8)

    t_hr = (np.arange(len(subject.hr_bpm)) * dalia.HR_SHIFT_S + dalia.HR_WINDOW_S / 2) * minutes
    ax_hr.plot(t_hr, subject.hr_bpm, color='#c44e52', lw=1)
    ax_hr.set(ylabel='reference HR [bpm]')

    t4 = np.arange(len(subject.eda)) / dalia.EDA_HZ * minutes
    ax_env.plot(t4, subject.eda, color='#4c72b0', lw=0.8)
    ax_env.set(ylabel='EDA [uS]', xlabel='time [min]')
    ax_temp = ax_env.twinx()
    ax_temp.plot(t4, subject.temp, color='#dd8452', lw=0.8)
    ax_temp.set_ylabel('TEMP [C]', color='#dd8452')

    # Mean spectrum of the acceleration magnitude per activity (8 s windows, gravity removed).
    n = int(spectrum_window_s * dalia.ACC_HZ)
    freqs = np.fft.rfftfreq(n, 1 / dalia.ACC_HZ)
    magnitude = np.linalg.norm(subject.acc_g, axis=1)
    labels = np.repeat(subject.activity, dalia.ACC_HZ // dalia.ACTIVITY_HZ)[:len(magnitude)]
    for a in range(activities.NUM_ACTIVITIES):
        starts = [s for s in range(0, len(magnitude) - n, n // 2) if np.all(labels[s:s + n] == a)]
        if not starts:
            continue
        windows = np.stack([magnitude[s:s + n] - magnitude[s:s + n].mean() for s in starts])
        power = np.mean(np.abs(np.fft.rfft(windows * np.hanning(n), axis=1)) ** 2, axis=0)
        ax_spec.semilogy(freqs, power + 1e-9, color=COLOURS[a], lw=1.2,
                         label=activities.ACTIVITY_NAMES[a])
    ax_spec.set(xlabel='frequency [Hz]', ylabel='power of |a| (mean over 8 s windows)',
                title='motion spectrum per activity', xlim=(0, dalia.ACC_HZ / 2))
    ax_spec.legend(fontsize=7)
    for ax in (ax_acc, ax_hr, ax_env, ax_spec):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
