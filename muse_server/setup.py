from setuptools import find_packages, setup

package_name = 'muse_server'

setup(
    name=package_name,
    version='0.2.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml', 'README.md']),
        ('share/' + package_name + '/config', ['config/serve.yaml']),
    ],
    # The GPU machine installs this alone (with ../muse_protocol): no ROS.
    #   pip install ./muse_protocol './muse_server[musicgen]'
    install_requires=['setuptools', 'numpy>=1.24', 'websockets>=14', 'muse_protocol'],
    extras_require={
        'musicgen': ['torch>=2.1', 'transformers>=5.24,<6'],
        # many replicas behind one proxy: muse_server.serve_app, muse_serve, config/serve.yaml
        'serve': ['ray[serve]==2.60.0'],
        'test': ['pytest', 'pytest-timeout'],
    },
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='The MUSE music server: WebSocket sessions and the synth and MusicGen backends. '
                'Runs without ROS.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'muse_music_server = muse_server.server:main',
            'muse_serve = muse_server.serve_app:main',
        ],
    },
)
