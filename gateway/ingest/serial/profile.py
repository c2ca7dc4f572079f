"""The device profile model: how one kind of device frames, acknowledges and means its output.

A profile is data (a TOML file, see hardware/profiles/ and docs/serial.md), validated as strictly
as the gateway's config: unknown keys are refused, each protocol declares its own settings under
a ``protocol`` discriminator, and every field has a description.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ConceptSpec(_Strict):
    """A coded concept for a measurement (e.g. LOINC ``LN`` or DCM codes)."""

    value: str = Field(min_length=1, max_length=16, description="Code Value.")
    scheme: str = Field(min_length=1, max_length=16, description="Coding Scheme Designator.")
    meaning: str = Field(min_length=1, max_length=64, description="Code Meaning.")


class MeasurementMap(_Strict):
    """Maps one of the device's result names (or test IDs) to a coded concept and a UCUM unit."""

    match: str = Field(
        min_length=1,
        description="The device's name for the result: the ASTM universal test ID's local code "
        "(4th component), or the line-kv field name.",
    )
    concept: ConceptSpec = Field(description="What was measured.")
    unit: str = Field(
        min_length=1, max_length=32, description="UCUM code of the value ('1' when unitless)."
    )
    device_units: dict[str, str] = Field(
        default_factory=dict,
        description="Unit texts the device sends, mapped to UCUM codes; a result whose unit "
        "text is neither this nor ``unit`` is refused rather than guessed.",
    )


class AstmProtocol(_Strict):
    """ASTM E1381 low-level protocol carrying E1394 records."""

    protocol: Literal["astm-e1394"] = Field(description="Discriminator.")
    frame_ack_timeout: float = Field(15.0, gt=0, description="E1381: sender waits for ACK.")
    receive_timeout: float = Field(30.0, gt=0, description="E1381: receiver waits for a frame.")
    max_retransmissions: int = Field(
        6, ge=1, le=6, description="E1381: a frame NAKed this often aborts the message."
    )
    contention_wait: float = Field(
        20.0, gt=0, description="E1381: the instrument waits after contention (the host: 1 s)."
    )


class LineKvProtocol(_Strict):
    """Line-oriented ``name: value unit`` reports."""

    protocol: Literal["line-kv"] = Field(description="Discriminator.")
    encoding: str = Field("latin-1", description="Text encoding of the line.")
    field_pattern: str = Field(
        r"^\s*(?P<name>[^:=]+?)\s*[:=]\s*(?P<value>[-+]?[0-9]*\.?[0-9]+)\s*(?P<unit>\S*)\s*$",
        description="Regular expression with groups name, value, unit for one result line.",
    )
    patient_id_pattern: str | None = Field(
        None, description="Regular expression with group patient_id, searched in each line."
    )
    patient_name_pattern: str | None = Field(
        None, description="Regular expression with group patient_name, searched in each line."
    )
    accession_pattern: str | None = Field(
        None, description="Regular expression with group accession_number, searched in each line."
    )
    terminator_pattern: str | None = Field(
        None, description="A line matching this ends the report; unset: only the idle timeout."
    )
    idle_timeout: float = Field(5.0, gt=0, description="Silence this long ends a report.")
    max_line_bytes: int = Field(4096, ge=80, description="A longer line is cut and counted.")


class PrintCaptureProtocol(_Strict):
    """A print job to what the device thinks is a printer: text pages, form feeds."""

    protocol: Literal["print-capture"] = Field(description="Discriminator.")
    encoding: str = Field("cp437", description="Text encoding of the printout.")
    idle_timeout: float = Field(5.0, gt=0, description="Silence this long ends the job.")
    columns: int = Field(80, ge=20, le=255, description="Characters per printed line.")
    lines_per_page: int = Field(66, ge=10, le=200, description="Lines per page (form length).")
    patient_id_pattern: str | None = Field(
        None, description="Regular expression with group patient_id, searched in the text."
    )
    patient_name_pattern: str | None = Field(
        None, description="Regular expression with group patient_name, searched in the text."
    )
    accession_pattern: str | None = Field(
        None, description="Regular expression with group accession_number, searched in the text."
    )


ProtocolSpec = Annotated[
    AstmProtocol | LineKvProtocol | PrintCaptureProtocol, Field(discriminator="protocol")
]


class OutputSpec(_Strict):
    """Which DICOM objects a message becomes."""

    # TID 1500 is an imaging Measurement Report (reported procedure, image library, measurement
    # groups tied to image regions): a lab analyser or vital-signs monitor has none of these.
    measurements: Literal["comprehensive-sr"] = Field(
        "comprehensive-sr",
        description="SR for measurements: a Comprehensive SR (TID 1500 needs images; refused).",
    )
    text_pdf: bool = Field(True, description="Free text becomes Encapsulated PDF.")
    text_sr: bool = Field(False, description="Free text also becomes a Basic Text SR.")
    document_title: ConceptSpec = Field(
        default_factory=lambda: ConceptSpec(
            value="18748-4", scheme="LN", meaning="Diagnostic imaging study"
        ),
        description="Concept Name of the SR document (its title).",
    )
    series_description: str = Field("", max_length=64, description="(0008,103E).")


class SimulatorSpec(_Strict):
    """What the modality simulator plays for this profile (tests, demo, commissioning)."""

    messages: list[str] = Field(
        default_factory=list,
        description="Messages as text; for astm-e1394 one record per line (H|..., P|..., R|..., "
        "L|...), framed by the simulator; for line-kv and print-capture the bytes as sent, with "
        "\\n line ends and \\f form feeds.",
    )
    pause_seconds: float = Field(1.0, ge=0, description="Pause between messages.")


class DeviceProfile(_Strict):
    """A device profile: protocol, measurement mapping, output and simulator messages."""

    name: str = Field(min_length=1, max_length=64, description="Profile name.")
    description: str = Field("", description="What devices it is for.")
    link: ProtocolSpec = Field(description="The protocol and its settings.")
    measurement: list[MeasurementMap] = Field(
        default_factory=list,
        description="Result mapping; a result it does not list is kept as text in the report "
        "(never dropped, never given a guessed code or unit).",
    )
    output: OutputSpec = Field(default_factory=OutputSpec, description="DICOM output.")
    simulator: SimulatorSpec = Field(
        default_factory=SimulatorSpec, description="Simulator messages."
    )

    @field_validator("measurement")
    @classmethod
    def _unique(cls, value: list[MeasurementMap]) -> list[MeasurementMap]:
        seen: set[str] = set()
        for m in value:
            if m.match in seen:
                raise ValueError(f"measurement {m.match!r} is mapped twice")
            seen.add(m.match)
        return value

    def mapping(self, name: str) -> MeasurementMap | None:
        """The mapping for a result name, or None when the profile does not know it."""
        return next((m for m in self.measurement if m.match == name), None)
