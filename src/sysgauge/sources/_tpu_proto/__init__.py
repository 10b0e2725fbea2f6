"""The messages of libtpu's runtime-metrics gRPC service, built at run time from a descriptor written here.

Why not the generated stubs of `tpu-info`: they would add tpu-info (and its rich, immutabledict, ...) as a
dependency, and generated code checks the protobuf/grpcio versions it was made with, warning or failing on
others. Why not protoc: the same version coupling, plus a build step. protobuf's descriptor API is stable
across releases and protobuf is already installed (the OTLP exporter needs it), so the dozen fields sysgauge
reads are declared below with the published field numbers (runtime_metric_service_subset.proto, next to this
file, is the same subset as a .proto for readers). Unknown fields in answers (timestamps, distributions) are
skipped by protobuf, so a newer libtpu stays readable.

The messages live in a private descriptor pool, so a program that also imports tpu-info's generated module
(same full names) does not collide with them.
"""

from __future__ import annotations

import importlib
from typing import Any

# protobuf ships no type stubs (types-protobuf is not a dependency): its modules are used as Any.
descriptor_pb2: Any = importlib.import_module("google.protobuf.descriptor_pb2")
descriptor_pool: Any = importlib.import_module("google.protobuf.descriptor_pool")
message_factory: Any = importlib.import_module("google.protobuf.message_factory")

PACKAGE = "tpu.monitoring.runtime"
SERVICE = f"{PACKAGE}.RuntimeMetricService"
GET_RUNTIME_METRIC = f"/{SERVICE}/GetRuntimeMetric"

_F: Any = descriptor_pb2.FieldDescriptorProto
# (message, [(field, number, type, label, message type or "", oneof index or None)], [oneof names])
_MESSAGES: tuple[tuple[str, list[tuple[str, int, Any, Any, str, int | None]], list[str]], ...] = (
    (
        "MetricRequest",
        [
            ("metric_name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, "", None),
            ("skip_node_aggregation", 2, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, "", None),
        ],
        [],
    ),
    ("MetricResponse", [("metric", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TPUMetric", None)], []),
    (
        "TPUMetric",
        [
            ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, "", None),
            ("description", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, "", None),
            ("metrics", 3, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Metric", None),
        ],
        [],
    ),
    (
        "Metric",
        [
            ("attribute", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Attribute", None),
            ("gauge", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Gauge", 0),
        ],
        ["measure"],
    ),
    (
        "Attribute",
        [
            ("key", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, "", None),
            ("value", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "AttrValue", None),
        ],
        [],
    ),
    (
        "AttrValue",
        [
            ("string_attr", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, "", 0),
            ("bool_attr", 2, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, "", 0),
            ("int_attr", 3, _F.TYPE_INT64, _F.LABEL_OPTIONAL, "", 0),
            ("double_attr", 4, _F.TYPE_DOUBLE, _F.LABEL_OPTIONAL, "", 0),
            ("kvlist_attr", 6, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "KeyValueList", 0),
            ("bytes_attr", 7, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, "", 0),
        ],
        ["attr"],
    ),
    ("KeyValueList", [("attributes", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Attribute", None)], []),
    (
        "Gauge",
        [
            ("as_double", 1, _F.TYPE_DOUBLE, _F.LABEL_OPTIONAL, "", 0),
            ("as_int", 2, _F.TYPE_INT64, _F.LABEL_OPTIONAL, "", 0),
            ("as_string", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, "", 0),
            ("as_bool", 4, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, "", 0),
        ],
        ["value"],
    ),
)


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="sysgauge/tpu_runtime_metric_service_subset.proto", package=PACKAGE, syntax="proto3"
    )
    for name, fields, oneofs in _MESSAGES:
        message = file.message_type.add(name=name)
        for oneof in oneofs:
            message.oneof_decl.add(name=oneof)
        for field_name, number, kind, label, type_name, oneof_index in fields:
            field = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
            if oneof_index is not None:
                field.oneof_index = oneof_index
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name, _, _ in _MESSAGES
    }


_CLASSES = _build()
DecodeError: type[Exception] = importlib.import_module("google.protobuf.message").DecodeError
MetricRequest: Any = _CLASSES["MetricRequest"]
MetricResponse: Any = _CLASSES["MetricResponse"]
TPUMetric: Any = _CLASSES["TPUMetric"]
Metric: Any = _CLASSES["Metric"]
Attribute: Any = _CLASSES["Attribute"]
AttrValue: Any = _CLASSES["AttrValue"]
KeyValueList: Any = _CLASSES["KeyValueList"]
Gauge: Any = _CLASSES["Gauge"]

__all__ = [
    "GET_RUNTIME_METRIC",
    "SERVICE",
    "AttrValue",
    "Attribute",
    "DecodeError",
    "Gauge",
    "KeyValueList",
    "Metric",
    "MetricRequest",
    "MetricResponse",
    "TPUMetric",
]
