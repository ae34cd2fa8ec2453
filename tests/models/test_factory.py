import pytest
import torch

from kedro_edge.config import ModelSpec
from kedro_edge.errors import ConfigError
from kedro_edge.models import ResidualCNN, build_model


def test_builtin_by_import_path_gets_data_shape_filled_in():
    model = build_model(ModelSpec(kwargs={"widths": [4, 8]}), input_shape=(1, 3, 16, 16), num_classes=7)
    assert isinstance(model, ResidualCNN)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 7)


def test_any_module_by_import_path_with_kwargs():
    spec = ModelSpec(class_path="torch.nn.Sequential", kwargs={})
    assert isinstance(build_model(spec, (1, 1, 8, 8), 10), torch.nn.Sequential)
    linear = build_model(ModelSpec(class_path="torch.nn.Linear", kwargs={"out_features": 2}), (1, 4), 10)
    assert (linear.in_features, linear.out_features) == (4, 2)  # in_features from the data


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_package.Model", "cannot import 'no_such_package.Model'"),
        ("kedro_edge.models.NoSuchModel", "cannot import"),
        ("kedro_edge.data.SPLITS", "is neither a torch.nn.Module class nor a function returning one"),
        ("kedro_edge.data.Splits", "is neither a torch.nn.Module class nor a function returning one"),
        ("builtins.dict", "is neither a torch.nn.Module class"),
    ],
)
def test_unimportable_model_names_the_key(path, message):
    with pytest.raises(ConfigError, match="model.class_path") as err:
        build_model(ModelSpec(class_path=path), (1, 1, 8, 8), 10)
    assert message in str(err.value)


def test_bad_kwargs_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.kwargs.*unexpected keyword"):
        build_model(ModelSpec(kwargs={"depth": 3}), (1, 1, 8, 8), 10)


def test_a_function_returning_something_else_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.class_path.*returned a list, not a torch.nn.Module"):
        build_model(ModelSpec(class_path="tests.models.builders.not_a_module"), (1, 4), 2)


def test_a_function_returning_a_module_gets_the_data_filled_in():
    spec = ModelSpec(class_path="tests.models.builders.tiny_net", kwargs={"hidden": 3})
    model = build_model(spec, (1, 2, 8, 8), 5)
    assert model(torch.zeros(1, 2, 8, 8)).shape == (1, 5)  # in_channels=2 and num_classes=5 filled


def test_a_builder_taking_kwargs_gets_num_classes_only():
    # torchvision's builders: (*, weights=None, progress=True, **kwargs) -> the architecture
    model = build_model(ModelSpec(class_path="tests.models.builders.passes_on"), (1, 1, 8, 8), 4)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 4)


def test_torchvision_builders_take_num_classes_from_the_data():
    spec = ModelSpec(class_path="torchvision.models.mobilenet_v3_small")
    model = build_model(spec, (1, 3, 32, 32), 10)
    assert model.classifier[-1].out_features == 10  # not ImageNet's 1000


def test_timm_create_model_takes_the_name_in_kwargs_and_the_channels_from_the_data():
    spec = ModelSpec(class_path="timm.create_model", kwargs={"model_name": "resnet10t"})
    model = build_model(spec, (1, 1, 32, 32), 7)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)  # in_chans=1 and num_classes=7 filled


def test_an_architecture_for_other_channels_names_the_key_and_the_shape():
    spec = ModelSpec(class_path="torchvision.models.resnet18")  # 3 channels; the data has 1
    expected = r"parameter 'model': torchvision.models.resnet18 cannot take inputs of shape \(1, 1, 32, 32\)"
    with pytest.raises(ConfigError, match=expected):
        build_model(spec, (1, 1, 32, 32), 10)
