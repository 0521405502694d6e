from glob import glob

from setuptools import find_packages, setup

package_name = 'muse_bringup'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='Launch file, parameter YAML and the runner that starts the whole MUSE graph.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'muse_run = muse_bringup.runner:main',
            'muse_report = muse_bringup.report:main',
            'muse_lifecycle_manager = muse_bringup.lifecycle_manager:main',
            'session_recorder = muse_bringup.session_recorder_node:main',
        ],
    },
)
