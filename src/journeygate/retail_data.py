"""Reading interaction files in the UCI Online Retail column layout (CSV, CSV.gz or Parquet).

Columns: InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID,
Country. The bundled sample (``data/sample``) and the full data set both use it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)

# Real products have a five-digit code with an optional letter suffix; POST, DOT, M, BANK
# CHARGES, gift vouchers and similar bookkeeping codes do not.
PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]{0,2}$")


class RetailDataError(ValueError):
    """The file is not in the Online Retail layout."""


def read_online_retail(path: str | Path) -> pd.DataFrame:
    """Load every line of an Online Retail file with the expected dtypes."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(
                path,
                dtype={"InvoiceNo": str, "StockCode": str, "Description": str, "Country": str},
                keep_default_na=False,
                na_values={"Description": [""], "CustomerID": [""]},
            )
    except ValueError as exc:  # pandas' and pyarrow's parse errors, undecodable bytes
        raise RetailDataError(f"{path}: not an Online Retail file ({exc})") from exc
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise RetailDataError(f"{path}: missing column {missing[0]!r}")
    if path.suffix == ".parquet":
        frame["Description"] = frame["Description"].replace("Unknown", pd.NA)
    frame["InvoiceDate"] = pd.to_datetime(frame["InvoiceDate"])
    frame["CustomerID"] = frame["CustomerID"].astype("Int64")
    return frame


def purchases(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed purchase lines of real products: no cancellations, returns or fees."""
    mask = (
        ~frame["InvoiceNo"].str.startswith(("C", "A"))
        & (frame["Quantity"] > 0)
        & (frame["UnitPrice"] > 0)
        & frame["StockCode"].str.match(PRODUCT_CODE)
    )
    return frame.loc[mask]
