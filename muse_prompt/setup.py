from setuptools import find_packages, setup

package_name = 'muse_prompt'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/config', ['config/presets.yaml']),
    ],
    install_requires=['setuptools', 'PyYAML'],
    zip_safe=True,
    maintainer='MUSE developers',
    maintainer_email='dev@muse.example.com',
    description='Activity, heart rate and taste to a MusicGen text prompt: templates, style presets, tempo mapping, hysteresis and the prompt node.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'prompt_builder = muse_prompt.prompt_builder_node:main',
        ],
    },
)
