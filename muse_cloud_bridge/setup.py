from setuptools import find_packages, setup

package_name = 'muse_cloud_bridge'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml', 'README.md', 'PROTOCOL.md']),
    ],
    # The server and the protocol need only these, so `pip install ./muse_cloud_bridge` works on
    # a GPU machine without ROS; the bridge node's ROS imports come from the ROS workspace.
    install_requires=['setuptools', 'numpy>=1.24', 'websockets>=14'],
    extras_require={
        'musicgen': ['torch>=2.1', 'transformers>=5.24,<6'],
        'test': ['pytest', 'pytest-timeout'],
    },
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='The bridge node to the MusicGen server, the wire protocol, and the standalone '
                'MusicGen WebSocket server (runs without ROS).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'cloud_bridge = muse_cloud_bridge.cloud_bridge_node:main',
            'muse_music_server = muse_cloud_bridge.server:main',
        ],
    },
)
