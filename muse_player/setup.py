from setuptools import find_packages, setup

package_name = 'muse_player'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/config', ['config/audio_player.yaml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description=('Jitter buffer, overlap-add mixer, sounddevice / WAV / null sinks and the '
                 'audio player node.'),
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'audio_player = muse_player.audio_player_node:main',
        ],
    },
)
