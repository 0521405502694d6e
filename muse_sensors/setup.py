from setuptools import find_packages, setup

package_name = 'muse_sensors'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml', 'README.md']),
        ('share/' + package_name + '/config', ['config/sensor_replay.yaml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='PPG-DaLiA loader, synthetic subject generator, sensor replay node and PPG-DaLiA to rosbag2 converter.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'muse_make_subjects = muse_sensors.synthetic:main',
            'muse_dalia_to_bag = muse_sensors.bag:main',
            'sensor_replay = muse_sensors.sensor_replay_node:main',
        ],
    },
)
