"""The session timeline PNG: activity (truth vs. encoder), heart rate and tempo, prompts,
fragment arrivals, underruns, latency, and the music's mel spectrogram."""

import numpy as np
from muse_common.activities import ACTIVITY_NAMES

from muse_bringup.metrics import summary_lines
from muse_bringup.session_data import wall_latencies


def draw_timeline(data, metrics, wav, png_path):
    """The timeline PNG of a loaded session; ``wav`` as returned by ``read_wav``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from muse_msgs.msg import MusicPrompt, PlaybackEvent

    # One axis, the wall clock the music plays in: stamps are data time (use_sim_time), which
    # runs `rate` times faster, so every stamp is mapped through the recorder's receive times.
    wall = data.to_wall
    t0 = float(wall([data.start])[0])
    fig, axes = plt.subplots(5, 1, figsize=(14, 12), sharex=True,
                             gridspec_kw={'height_ratios': [2.2, 1.3, 1.2, 1.2, 1.6]})
    ax_act, ax_hr, ax_frag, ax_lat, ax_mel = axes

    if data.ground_truth:
        t, c = zip(*data.ground_truth)
        ax_act.step(wall(t) - t0, c, where='post', color='0.6', lw=6, alpha=0.6,
                    label='ground truth')
    if data.estimates:
        t, c, raw = [np.array(x) for x in list(zip(*data.estimates))[:3]]
        ax_act.step(wall(t) - t0, c, where='post', color='tab:blue', lw=1.8,
                    label='encoder (smoothed)')
        ax_act.plot(wall(t) - t0, raw, '.', color='tab:blue', ms=3, alpha=0.4, label='encoder (raw)')
    ax_act.set_yticks(range(len(ACTIVITY_NAMES)))
    ax_act.set_yticklabels(ACTIVITY_NAMES, fontsize=8)
    ax_act.set_ylabel('activity')
    # Above the axes: inside, it would hide the top classes' steps.
    ax_act.legend(loc='lower right', bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=3,
                  frameon=False)

    if data.heart_rate:
        t, bpm = zip(*data.heart_rate)
        ax_hr.plot(wall(t) - t0, bpm, color='tab:red', lw=1.2, label='heart rate')
    if data.prompts:
        ax_hr.step(wall([p['stamp'] for p in data.prompts]) - t0,
                   [p['target_bpm'] for p in data.prompts], where='post', color='tab:purple',
                   ls='--', label='music target tempo')
    ax_hr.set_ylabel('beats/min')
    ax_hr.legend(loc='upper right', fontsize=8)

    reasons = {MusicPrompt.REASON_INITIAL: 'initial',
               MusicPrompt.REASON_ACTIVITY_CHANGE: 'activity',
               MusicPrompt.REASON_HEART_RATE_ZONE: 'HR zone',
               MusicPrompt.REASON_MANUAL: 'manual',
               MusicPrompt.REASON_PROFILE_CHANGE: 'profile'}
    for p in data.prompts:
        at = p['received'] - t0
        for ax in axes[:4]:
            ax.axvline(at, color='tab:green', lw=0.8, alpha=0.7)
        ax_hr.annotate(f"#{p['prompt_id']} {p['activity']} ({reasons.get(p['reason'], '?')})",
                       (at, 0.97), xycoords=ax_hr.get_xaxis_transform(),
                       rotation=90, fontsize=7, va='top', ha='right', color='tab:green')

    if data.fragments:
        t, pid = np.array([f[0] for f in data.fragments]), np.array([f[1] for f in data.fragments])
        ax_frag.scatter(wall(t) - t0, pid, s=6, c=pid % 10, cmap='tab10', label='fragment arrivals')
    for t, event, *_, dur in data.playback:
        if event == PlaybackEvent.UNDERRUN:
            end = float(wall([t])[0]) - t0
            ax_frag.axvspan(end - dur, end, color='red', alpha=0.4)
    ax_frag.set_ylabel('prompt id')
    ax_frag.set_title('fragment arrivals (red: underruns)', fontsize=9, loc='left')

    for prompt_id, (to_audible, change_to_audible) in wall_latencies(data).items():
        t_aud = data.audible_at[prompt_id] - t0
        ax_lat.bar(t_aud, to_audible * 1000, width=2.0, color='tab:orange')
        if change_to_audible is not None:
            ax_lat.plot(t_aud, change_to_audible * 1000, 'kv', ms=5)
    ax_lat.set_ylabel('latency [ms]')
    ax_lat.set_title('bars: prompt -> audible; triangles: activity change -> audible', fontsize=9,
                     loc='left')

    _draw_mel(ax_mel, wav, data, t0)
    ax_mel.set_xlabel('session time [s]')
    m = metrics
    fig.suptitle('MUSE session - ' + '; '.join(summary_lines(m)[:3]), fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def _draw_mel(ax, wav, data, t0):
    ax.set_ylabel('mel band')
    if wav is None:
        ax.text(0.5, 0.5, 'no session WAV', transform=ax.transAxes, ha='center')
        return
    import librosa
    audio, rate = wav
    if len(audio) < rate // 10:
        return
    mel = librosa.power_to_db(librosa.feature.melspectrogram(
        y=audio.mean(axis=1), sr=rate, n_fft=2048, hop_length=1024, n_mels=64), ref=np.max)
    # The WAV's t=0 is when the player started; place it on the session clock.
    first = data.first_audible
    offset = (float(data.to_wall([first[0]])[0]) - first[1] if first else t0) - t0
    ax.imshow(mel, origin='lower', aspect='auto', cmap='magma',
              extent=[offset, offset + len(audio) / rate, 0, mel.shape[0]])
    ax.set_title('session audio (log-mel)', fontsize=9, loc='left')
