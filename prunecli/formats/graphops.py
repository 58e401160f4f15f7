"""The TensorFlow ops a SavedModel may use in safe mode: pure tensor compute, no I/O.

A SavedModel's graphs can hold ``ReadFile``, ``WriteFile``, ``PrintV2`` to a file,
``MatchingFiles``, ``EagerPyFunc`` (Python code), ... and prunecli calls its
``serving_default`` while loading. So every op of every function in the library, and of
the graph itself, is checked against ``PURE`` before TensorFlow loads the folder. The
functions ``saver_def`` points at (TensorFlow's own checkpoint writer and reader, which
neither loading nor a signature call runs) may also use ``CHECKPOINT``; a function
reachable from anything else gets the strict list, even if the saver calls it too.

The checks take a ``MetaGraphDef`` proto and import nothing; ``read_proto`` imports
TensorFlow's protobuf definitions only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunecli.errors import ModelLoadError, first_line

_PURE_NAMES = """
    Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh
    Assert AssignAddVariableOp AssignSubVariableOp AssignVariableOp Atan Atan2 Atanh
    AvgPool AvgPool3D BatchMatMul BatchMatMulV2 BatchMatMulV3 BatchToSpaceND BiasAdd
    BiasAddV1 Bitcast BitwiseAnd BitwiseOr BitwiseXor BroadcastArgs BroadcastGradientArgs
    BroadcastTo Bucketize Case Cast Ceil CheckNumerics CheckNumericsV2 ClipByValue Complex
    ComplexAbs Concat ConcatOffset ConcatV2 Const Conj Conv Conv2D Conv2DBackpropFilter
    Conv2DBackpropInput Conv3D Conv3DBackpropInputV2 Cos Cosh CropAndResize Cumprod Cumsum
    DepthToSpace DepthwiseConv2dNative DepthwiseConv2dNativeBackpropInput Diag DiagPart
    DisableCopyOnRead Div DivNoNan Einsum Elu Empty EnsureShape Enter Equal Erf Erfc Exit
    Exp ExpandDims Expm1 ExtractImagePatches FakeQuantWithMinMaxArgs
    FakeQuantWithMinMaxVars Fill Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormV2
    FusedBatchNormV3 Gather GatherNd GatherV2 Gelu Greater GreaterEqual Identity IdentityN
    If Imag InTopKV2 Inv InvertPermutation IsFinite IsInf IsNan L2Loss LeakyRelu LeftShift
    Less LessEqual Lgamma LinSpace Log Log1p LogSoftmax LogicalAnd LogicalNot LogicalOr
    LoopCond MatMul MatrixBandPart MatrixDiag MatrixDiagPartV3 MatrixDiagV3 MatrixSetDiagV3
    Max MaxPool MaxPool3D MaxPoolV2 MaxPoolWithArgmax Maximum Mean Merge Min Minimum
    MirrorPad Mod Mul MulNoNan Multinomial Neg NextIteration NoOp NonMaxSuppressionV5
    NotEqual OneHot OnesLike OptionalFromValue OptionalGetValue OptionalHasValue
    OptionalNone Pack Pad PadV2 ParallelConcat PartitionedCall Placeholder
    PlaceholderWithDefault Pow PreventGradient Prod RandomStandardNormal RandomUniform
    RandomUniformInt Range Rank ReadVariableOp Real RealDiv Reciprocal Relu Relu6 Reshape
    ResizeBicubic ResizeBilinear ResizeNearestNeighbor ResourceGather ResourceGatherNd
    ResourceScatterAdd ResourceScatterUpdate ResourceStridedSliceAssign ReverseSequence
    ReverseV2 RightShift Rint Round Rsqrt ScatterNd Select SelectV2 Selu Shape ShapeN Sigmoid
    Sign Sin Sinh Size Slice Snapshot Softmax Softplus Softsign SpaceToBatchND SpaceToDepth
    SparseSoftmaxCrossEntropyWithLogits SparseToDense Split SplitV Sqrt Square
    SquaredDifference Squeeze StatefulPartitionedCall StatelessCase StatelessIf
    StatelessRandomGetKeyCounter StatelessRandomNormalV2 StatelessRandomUniformV2
    StatelessTruncatedNormalV2 StatelessWhile StopGradient StridedSlice StridedSliceGrad
    Sub Sum Switch Tan Tanh TensorListElementShape TensorListFromTensor TensorListGetItem
    TensorListLength TensorListPopBack TensorListPushBack TensorListReserve
    TensorListResize TensorListSetItem TensorListStack TensorScatterAdd TensorScatterUpdate
    Tile TopKV2 Transpose TruncateDiv TruncateMod TruncatedNormal Unique Unpack
    UnsortedSegmentMax UnsortedSegmentSum VarHandleOp VarIsInitializedOp VariableShape
    Where While Xdivy Xlog1py ZerosLike
    CudnnRNN CudnnRNNV2 CudnnRNNV3 CudnnRNNBackprop CudnnRNNBackpropV2 CudnnRNNBackpropV3
    CudnnRNNParamsSize CudnnRNNCanonicalToParams CudnnRNNCanonicalToParamsV2
    AvgPoolGrad AvgPool3DGrad BiasAddGrad Conv3DBackpropFilterV2
    DepthwiseConv2dNativeBackpropFilter EluGrad FusedBatchNormGrad FusedBatchNormGradV2
    FusedBatchNormGradV3 LeakyReluGrad MaxPoolGrad MaxPoolGradV2 MaxPool3DGrad
    MaxPoolGradGrad Relu6Grad ReluGrad RsqrtGrad SeluGrad SigmoidGrad SoftplusGrad
    SoftsignGrad SqrtGrad TanhGrad ReciprocalGrad SoftmaxCrossEntropyWithLogits
    ResizeBilinearGrad ResizeNearestNeighborGrad MatrixDiagPart Invert Cross Lgamma Digamma
    EmptyTensorList TensorListConcat TensorListConcatLists TensorListConcatV2
    TensorListGather TensorListPushBackBatch TensorListScatter TensorListScatterIntoExistingList
    TensorListScatterV2 TensorListSplit
"""
PURE = frozenset(_PURE_NAMES.split())
# TensorFlow's checkpoint writer/reader: they read and write files named by their inputs,
# allowed only inside the functions saver_def names.
CHECKPOINT = frozenset(
    {"MergeV2Checkpoints", "RestoreV2", "SaveV2", "SaveSlices", "ShardedFilename"}
    | {"ShardedFilespec", "StaticRegexFullMatch", "StringJoin"}
)


def first_unsafe(graph: Any) -> tuple[str, list[str]] | None:
    """``(where, ops)``: the first graph part (graph node or library function) using ops
    outside the allowlist, and all such ops it uses, sorted; None when every op is allowed.
    E.g. ``("function __inference_serve_9", ["PrintV2", "StringFormat"])`` for a signature
    that prints to a file.
    """
    library = {function.signature.name: function for function in graph.graph_def.library.function}
    saver_nodes = _saver_nodes(graph)
    strict_roots: set[str] = set()
    saver_roots: set[str] = set()
    for node in graph.graph_def.node:
        roots = saver_roots if node.name in saver_nodes else strict_roots
        roots.update(_called(node, library))
        if node.op not in PURE and node.op not in library:
            return f"graph node {node.name}", [node.op]
    strict = _reachable(strict_roots, library)
    saver_only = _reachable(saver_roots, library) - strict
    for name, function in sorted(library.items()):
        allowed = PURE | CHECKPOINT if name in saver_only else PURE
        bad = {node.op for node in function.node_def} - allowed - library.keys()
        if bad:
            return f"function {name}", sorted(bad)
    return None


def _saver_nodes(graph: Any) -> set[str]:
    saver = graph.saver_def
    names = {saver.save_tensor_name, saver.restore_op_name}
    return {name.split(":")[0].lstrip("^") for name in names if name}


def _called(node: Any, library: dict[str, Any]) -> set[str]:
    """Library functions a node calls: its op itself, or ``func`` attributes (``f`` of a
    call, ``body``/``cond`` of a loop, ``then_branch``/``else_branch``, ``branches``)."""
    found = {node.op} & library.keys()
    for value in node.attr.values():
        if value.HasField("func"):
            found.add(value.func.name)
        if value.HasField("list"):
            found.update(item.name for item in value.list.func)
    return found


def _reachable(roots: set[str], library: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        for node in library[name].node_def:
            pending.extend(_called(node, library) - seen)
    return seen


def read_proto(folder: Path) -> Any:
    """The ``SavedModel`` protobuf of ``folder/saved_model.pb``, parsed without loading or
    calling any graph; ModelLoadError (one line) when it is not one."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    except Exception as exc:  # protobuf's DecodeError, or an unreadable file
        raise ModelLoadError(
            f"{folder}: saved_model.pb is damaged or not a SavedModel ({first_line(exc)})"
        ) from None
    return proto
