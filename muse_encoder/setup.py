from setuptools import find_packages, setup

package_name = 'muse_encoder'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/config', ['config/activity_encoder.yaml']),
    ],
    # The default checkpoint and its report travel with the Python package, so
    # muse_encoder.checkpoint.DEFAULT_CHECKPOINT resolves in source, symlink and plain installs.
    package_data={package_name: ['models/*.pt', 'models/*.onnx', 'models/*.json', 'models/*.png']},
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='Wrist accelerometer to activity: AccelToRGBMel features, the activity CNN, its training CLI and the encoder node.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'activity_encoder = muse_encoder.activity_encoder_node:main',
            'muse_train_encoder = muse_encoder.train:main',
            'muse_export_encoder = muse_encoder.export:main',
            'muse_evaluate_encoder = muse_encoder.evaluate:main',
            'muse_calibrate_encoder = muse_encoder.calibrate:main',
        ],
    },
)
