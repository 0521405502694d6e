from setuptools import find_packages, setup

package_name = 'muse_common'

setup(
    name=package_name,
    version='0.2.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools', 'numpy>=1.24'],
    extras_require={'test': ['pytest', 'pytest-timeout']},
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='What every MUSE package shares: the vocabulary (activities, the user profile, '
                'statistics; plain Python) and the node plumbing (topics, QoS by role, '
                'diagnostics, parameters, lifecycle, the node main loop).',
    license='Apache-2.0',
)
