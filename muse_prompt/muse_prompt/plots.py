"""Draw the tempo entrainment: target BPM against heart rate per activity (over the heart-rate
zones of a listener's age), and what each style preset makes of it.

    python -m muse_prompt.plots tempo_map.png [--age 34] [--presets-file my_presets.yaml]
"""

import argparse
import sys

import numpy as np

from muse_prompt import heart_zones
from muse_prompt.presets import PresetError, load_library
from muse_prompt.tempo import TEMPO_RULES, target_bpm
from muse_common.activities import ACTIVITY_NAMES


def draw_tempo_map(path, library, age_years=0):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    heart_rates = np.arange(40.0, 201.0, 1.0)
    hr_max = heart_zones.max_heart_rate(age_years)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={'width_ratios': [3, 2]})

    bounds = (0.0,) + heart_zones.zone_bounds(hr_max) + (heart_rates[-1],)
    shades = plt.get_cmap('Reds')(np.linspace(0.05, 0.45, len(heart_zones.ZONE_NAMES)))
    for zone, name in enumerate(heart_zones.ZONE_NAMES):
        low, high = max(bounds[zone], heart_rates[0]), bounds[zone + 1]
        if high > low:
            left.axvspan(low, high, color=shades[zone], alpha=0.35, lw=0)
            left.text((low + high) / 2, 41, name, ha='center', va='bottom', fontsize=8)
    colours = plt.get_cmap('tab10')
    for i, activity in enumerate(ACTIVITY_NAMES):
        tempo = [TEMPO_RULES[activity].target(hr) for hr in heart_rates]
        left.plot(heart_rates, tempo, color=colours(i), lw=2, label=activity)
    left.set(xlabel='heart rate [beats/min]', ylabel='target tempo [BPM]', ylim=(40, 150),
             title=f'Tempo entrainment (zones for HRmax {hr_max:.0f} beats/min)')
    left.legend(loc='upper left', fontsize=8, ncol=3)
    left.grid(alpha=0.3)

    table = np.array([[target_bpm(a, TEMPO_RULES[a].reference_hr,
                                  library.get(name).tempo_range_bpm) for a in ACTIVITY_NAMES]
                      for name in library.names])
    right.imshow(table, cmap='viridis', aspect='auto')
    for (row, col), bpm in np.ndenumerate(table):
        right.text(col, row, f'{bpm:.0f}', ha='center', va='center', color='white', fontsize=8)
    right.set_xticks(range(len(ACTIVITY_NAMES)), ACTIVITY_NAMES, rotation=40, ha='right')
    right.set_yticks(range(len(library)), library.names)
    right.set_title('Target BPM per preset at each reference heart rate\n'
                    '(clamped to the preset tempo range)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('output', help='PNG file to write')
    parser.add_argument('--age', type=int, default=0, help='listener age [years]; 0 = unknown')
    parser.add_argument('--presets-file', default='', help='your presets YAML')
    args = parser.parse_args(argv)
    try:
        library = load_library(args.presets_file or None)
    except PresetError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(draw_tempo_map(args.output, library, args.age))
    return 0


if __name__ == '__main__':
    sys.exit(main())
