import json

import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table

from slampaper.results import Recorder, glue_name, load_records


def test_records_figures_and_tables_land_in_one_json_per_notebook(tmp_path):
    recorder = Recorder("chapter", parameters={"n_train": np.int64(5)}, data_source="mock", output_dir=tmp_path)
    assert recorder.record("cv_scatter.teff", np.float64(51.5), unit="K", paper=50) == 51.5
    recorder.record("bad", float("nan"))
    figure = plt.figure()
    recorder.save_figure(figure, "fig", caption="a figure")
    plt.close(figure)
    recorder.save_table(Table({"a": [1, 2]}), "tab", caption="a table", formats=("ecsv", "fits"))
    content = json.loads((tmp_path / "chapter.json").read_text())
    assert content["parameters"] == {"n_train": 5} and content["data_source"] == "mock"
    assert content["records"]["cv_scatter.teff"] == {"value": 51.5, "unit": "K", "paper": 50, "description": ""}
    assert content["records"]["bad"]["value"] is None
    assert (tmp_path / content["figures"]["fig"]["path"]).is_file()
    assert len(content["tables"]["tab"]["paths"]) == 2
    assert load_records(tmp_path)["chapter"] == content


def test_glue_names_are_identifiers():
    assert glue_name("cv_scatter.teff.snr-100") == "cv_scatter_teff_snr_100"


def test_readable_rounds_floats_blanks_masked_values_and_drops_astropys_decoration():
    from astropy.table import MaskedColumn, Table

    from slampaper.results import readable

    table = Table({"scatter": [159.27855, 0.000123456], "n_star": [100, 7],
                   "paper": MaskedColumn([17175, 0], mask=[False, True])})
    shown = readable(table, significant=3)
    html = shown._repr_html_()
    assert "<td>159</td>" in html and "<td>0.000123</td>" in html and "<td>100</td>" in html
    assert "<td>–</td>" in html and "<td>0</td>" not in html      # masked: a dash, not a placeholder
    assert "Table length" not in html and "int64" not in html and "float64" not in html
    assert repr(shown).splitlines()[1].split() == ["159", "100", "17175"]
    assert table["scatter"].info.format is None          # the table itself keeps full precision
