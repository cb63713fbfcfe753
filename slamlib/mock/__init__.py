"""Mock LAMOST survey: spectra synthesized from stellar labels (the book's default data).

* :func:`synthesize` - LAMOST-like spectra (flux, ivar, ORMASK, header meta) from labels;
* :func:`lasp_test_sample`, :func:`apogee_common_sample` - the label samples of the
  paper's Sections 3 and 4;
* :func:`write_lamost_fits` - LAMOST-format FITS files for :func:`slamlib.io.read_lamost`;
* :func:`survey` - labels plus spectra, cached on disk;
* :func:`measure_snr` - the S/N_g definition used throughout.

The physics is described in the module docstrings of :mod:`.atmosphere`,
:mod:`.lines` (the 418 strong lines), :mod:`.forest` (the dense forest of ~20,000
atomic and CH, CN, MgH lines in 3850-5900 A), :mod:`.profiles`, :mod:`.molecules`,
:mod:`.continuum` and :mod:`.observe`; the line lists and their sources in ``LINES.md``.
The LASP-like catalogue errors of the samples are described in
:func:`slamlib.mock.samples.lasp_random_errors`.
"""

from slamlib.mock.fits_output import write_lamost_fits
from slamlib.mock.observe import measure_snr
from slamlib.mock.samples import (
    LASP_SNR_BINS,
    LASP_TRAIN_SNR,
    apogee_common_sample,
    lasp_test_sample,
)
from slamlib.mock.survey_cache import MOCK_VERSION, survey
from slamlib.mock.synthesis import (
    LABEL_COLUMNS,
    LABEL_DEFAULTS,
    LABEL_LIMITS,
    synthesize,
)

__all__ = [
    "LABEL_COLUMNS",
    "LABEL_DEFAULTS",
    "LABEL_LIMITS",
    "LASP_SNR_BINS",
    "LASP_TRAIN_SNR",
    "MOCK_VERSION",
    "apogee_common_sample",
    "lasp_test_sample",
    "measure_snr",
    "survey",
    "synthesize",
    "write_lamost_fits",
]
