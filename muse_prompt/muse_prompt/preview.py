"""Check a presets file and print the prompts it makes, one per activity.

    python -m muse_prompt.preview [--presets-file my_presets.yaml] [--style NAME]
                                  [--heart-rate 72] [--age 34] [--height-cm 182] [--weight-kg 78]

Exit status 0 when the file is valid, 2 with the error (file and key) when it is not.
"""

import argparse
import math
import sys

from muse_prompt.presets import PresetError, UnknownStyleError, load_library
from muse_prompt.template import DEFAULT_MAX_PROMPT_CHARS, render
from muse_common.activities import ACTIVITY_NAMES
from muse_common.profile import Profile


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--presets-file', default='',
                        help='your presets YAML (added to the built-in presets)')
    parser.add_argument('--style', action='append',
                        help='preset to show (repeatable); default: every preset')
    parser.add_argument('--heart-rate', type=float, default=math.nan, help='[beats/min]')
    parser.add_argument('--age', type=int, default=0, help='[years]; 0 = unknown')
    parser.add_argument('--height-cm', type=float, default=math.nan)
    parser.add_argument('--weight-kg', type=float, default=math.nan)
    parser.add_argument('--max-chars', type=int, default=DEFAULT_MAX_PROMPT_CHARS)
    args = parser.parse_args(argv)

    try:
        library = load_library(args.presets_file or None)
        presets = [library.get(name) for name in (args.style or library.names)]
    except (PresetError, UnknownStyleError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    profile = Profile(age=args.age, height_cm=args.height_cm, weight_kg=args.weight_kg)
    for preset in presets:
        print(f'== {preset.name} ({preset.source})' +
              (f': {preset.description}' if preset.description else ''))
        for activity_id, activity in enumerate(ACTIVITY_NAMES):
            prompt = render(preset, activity_id, args.heart_rate, profile,
                            max_chars=args.max_chars)
            trimmed = f', dropped {list(prompt.dropped)}' if prompt.dropped else ''
            print(f'  {activity:<13} {prompt.target_bpm:3.0f} BPM  energy {prompt.energy:.2f}  '
                  f'{len(prompt.text)} chars{trimmed}\n    {prompt.text}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
