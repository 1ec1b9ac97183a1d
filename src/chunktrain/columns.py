"""The dataset's column names, shared by the stage that writes the splits and the code that reads them."""

TARGET = "y"


def feature_names(n_features: int) -> list[str]:
    return [f"x{i}" for i in range(n_features)]
