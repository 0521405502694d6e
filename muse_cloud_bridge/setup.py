from setuptools import find_packages, setup

package_name = 'muse_cloud_bridge'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml', 'README.md']),
    ],
    install_requires=['setuptools', 'muse_protocol'],
    extras_require={'test': ['pytest', 'pytest-timeout']},
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='The ROS node that links the graph to a MUSE music server: prompts out, '
                'audio fragments back.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'cloud_bridge = muse_cloud_bridge.cloud_bridge_node:main',
        ],
    },
)
