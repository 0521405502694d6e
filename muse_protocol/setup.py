from setuptools import find_packages, setup

package_name = 'muse_protocol'

setup(
    name=package_name,
    version='0.2.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml', 'PROTOCOL.md']),
    ],
    # Both ends of the wire install this: the robot (through muse_cloud_bridge) and the GPU
    # machine (through muse_server). No ROS.
    install_requires=['setuptools', 'numpy>=1.24', 'websockets>=14'],
    extras_require={'test': ['pytest', 'pytest-timeout']},
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='The MUSE wire protocol (bridge <-> music server), its asyncio client and the '
                'shared-secret rules. Plain Python, no ROS.',
    license='Apache-2.0',
)
