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
        ("kedro_edge.models.build_model", "is not a torch.nn.Module class"),
    ],
)
def test_unimportable_model_names_the_key(path, message):
    with pytest.raises(ConfigError, match="model.class_path") as err:
        build_model(ModelSpec(class_path=path), (1, 1, 8, 8), 10)
    assert message in str(err.value)


def test_bad_kwargs_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.kwargs.*unexpected keyword"):
        build_model(ModelSpec(kwargs={"depth": 3}), (1, 1, 8, 8), 10)
