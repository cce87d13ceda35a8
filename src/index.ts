/** attnscope's library API. */
export { loadModel, type LoadOptions } from './engine/load.js';
export { Model, type TraceOptions, type ModelDescription, type ModelParts, type ModelTokenizer, type GraphCacheHooks } from './engine/model.js';
export {
  attribute, defaultBaseline, baselineTokenId, integrationPoints, ATTRIBUTION_METHODS, BASELINE_KINDS, INTEGRATION_RULES, HARD_PATHS,
  type AttributeOptions, type AttributionResult, type AttributionMethod, type BaselineKind, type IntegrationRule,
  type TargetSpec, type TargetTerm, type ResolvedTarget, type IntegratedGradients, type HeadImportance, type AutoSteps,
} from './engine/gradients.js';
export { logitsBatch, type BatchRow, type BatchLogits, type BatchLogitsRow, type LogitsBatchOptions } from './engine/batch.js';
export { DEFAULT_BATCH_MEMORY_MB, memoryShape, forwardItemBytes, backwardItemBytes, type MemoryShape } from './engine/batch-memory.js';
export { ablateHeads, ablationGates, meanAblation, headContextMeans, type AblationOptions, type AblationResult, type AblationCandidateResult } from './engine/ablation.js';
export { traceLayers, traceByLayers, traceModel, autoExecution, checkExecutionMode, EXECUTION_MODES, LayerRunCancelled, type AutoExecutionOptions, type ExecutionMode, type LayerOutputs, type LayerwiseOptions, type LayerwiseRun, type PreparedRun, type TraceRun, type TraceRunOptions } from './engine/layerwise.js';
export { cosineSimilarity, klFromLogits, logSoftmax, parseHeadList, ABLATION_MODES, type HeadRef, type AblationMode } from './analysis/ablation.js';
export {
  attentionTimesGradient, headAttentionGradient, attentionGradientTokenScores, gradientWeightedAttention, gradientRollout,
  encoderDecoderGradientRollout, normalizeSelfRelevance, reduceHidden, gradientTimesInput, michelHeadImportance, attentionAttributions,
  HIDDEN_REDUCTIONS, type HiddenReduction, type EncoderDecoderRelevance, type MichelOptions, type TokenScoreOptions,
} from './analysis/attribution.js';
export type { Attributions, AttributionTarget, TokenAttribution } from './core/trace.js';
export type { GenerateOptions } from './generation/decode.js';
export type { SamplingOptions } from './generation/sampling.js';
export type { Trace, Token, ModelInfo, LayerStack, StackMap, StackName } from './core/trace.js';
export { attentionAt, expertLoad } from './core/trace.js';
export { AttnscopeError } from './core/errors.js';
export { openTraceFile, readTraceFile, writeTraceFile, writeTraceJsonTo, writeTraceSafetensors, type TraceFileContents } from './io/trace-file.js';
export { attentionWarnings } from './core/trace-check.js';
export { supportedModelTypes } from './models/registry.js';
export type { Runtime, GraphSession, RuntimeTensor } from './runtime/runtime.js';
export type { ScoreTerms, ScoreMap, Matrix, Prediction, Candidate, GenerationInfo, Routing, RoutingLayer } from './core/trace.js';

// Analysis: pure functions of a Trace.
export { neuronScores, scoreChecks, keyHeadFor, describeScale, type NeuronScores, type NeuronOptions, type ScoreCheck } from './analysis/neuron.js';
export { topKPredictions, type VocabLogits } from './analysis/predictions.js';
export {
  headMatrix, aggregateHeads, stackFacts, maskedEntries, pairBoundary, strongestWeights,
  type StackFacts, type Strongest,
} from './analysis/aggregate.js';
export {
  wordUnits, sentenceUnits, textWordUnits, alignedUnits, wordSpans, sentenceSpans, groupMatrix, blockMatrix, drillBlock,
  wordAttention, sentenceAttention, traceMatrix, stackTokens,
  type Unit, type UnitMatrix, type CombineRule, type GroupRules, type BlockRule, type WordAttentionOptions, type SentenceAttentionOptions,
} from './analysis/words.js';
export {
  compareTraces, compareHeads, jsDivergence, meanRowJsDivergence, differenceMatrix, depthLayer, comparisonRows, comparisonCsv, COMPARISON_COLUMNS,
  type Comparison, type CompareOptions, type HeadPair, type HeadDifference, type ComparisonRow, type Alignment, type Matching,
} from './analysis/compare.js';
export {
  normAttentionPerHead, normAttentionLayer, normAttention, altiLayer, alti, altiRollout, composeLayers,
} from './analysis/contributions.js';
export {
  attentionRollout, attentionGraph, fusedAttention, rolloutOfMatrices, fuseHeads, discardLowest, addResidual, HEAD_FUSIONS,
  attentionRolloutWith, rolloutRows, rolloutRowsOfMatrices,
  type HeadFusion, type LayerMatrices, type GraphOptions, type AttentionGraph, type RolloutResult,
} from './analysis/rollout.js';
export { runtimeKernel, type AnalysisKernel, type RolloutKernel, type KernelOptions } from './analysis/kernels.js';
/** The onnxruntime-node Runtime (for runtimeKernel; loadModel uses it by default). */
export { nodeRuntime } from './runtime/onnxruntime-node.js';
export {
  attentionFlow, attentionFlowOfMatrices, FlowNetwork, layeredNetwork, checkFlowSize, FLOW_MAX_NODES,
  type FlowOptions, type FlowResult, type FlowMatrices, type FlowOfMatricesOptions,
} from './analysis/flow.js';
export {
  headMetrics, quantiles, jensenShannon, isPunctuationToken, HEAD_METRIC_NAMES,
  type HeadMetrics, type HeadMetricRow, type HeadMetricOptions, type HeadMetricName, type MetricValues, type OmittableMetric, OMITTABLE_METRICS,
} from './analysis/head-metrics.js';
export {
  headTable, averageHeadTables, headsOfType, topType, headTableCsv, headTableJsonRows,
  HEAD_TYPE_NAMES, HEAD_TYPE_THRESHOLDS, HEAD_COLUMNS, HEAD_TABLE_HEADER,
  type HeadTableRow, type HeadTableOptions, type HeadTypeName, type HeadColumn,
} from './analysis/head-types.js';
export { mulberry32 } from './core/random.js';
export { runProbe, probeSequences, probeVocabularyOf, PROBE_DEFAULTS, type ProbeTracer, type ProbeVocabulary, type ProbeOptions, type ProbeResult } from './analysis/probe.js';
export { tokenWordClasses, tagWords, type TaggedWord } from './analysis/word-classes.js';
export {
  clusterHeads, headFeatureRows, standardise, silhouette, kMeansBest, projectHeads, clusterTableCsv, clusterTableJsonRows, clusteringJson,
  CLUSTER_PROJECTIONS, CLUSTER_DEFAULTS, CLUSTER_TABLE_HEADER,
  type ClusterInputRow, type ClusterOptions, type ClusterProjection, type HeadClustering, type HeadCluster, type ClusteredHead, type Standardised,
} from './analysis/cluster.js';
export type { ContributionTaps, ContributionMap } from './core/trace.js';
export { logitLensGrid, logitLensTable, logitLensOf, lensRowLabel, type LensGrid, type LensTableRow } from './analysis/logit-lens.js';
export {
  updateNorms, hiddenStatePca, residualsOf,
  type UpdateNorms, type LayerUpdates, type SubLayerUpdate, type StatePca, type StateProjection,
} from './analysis/hidden-states.js';
export type { LayerStates, LayerStateMap, Residuals, EmbeddingParts, LogitLens, LogitLensLayer } from './core/trace.js';

// Views: each view's layout as data, its SVG writer, PNG, and the standalone HTML page.
export {
  renderSvg, renderHeadView, renderModelView, renderNeuronView, renderHeatmap,
  type AnyViewOptions, type HeadViewOptions, type ModelViewOptions, type NeuronViewOptions, type HeatmapOptions,
  type CommonViewOptions, type ViewName, VIEW_NAMES,
} from './views/svg/index.js';
export { headViewLayout, type HeadLayout } from './views/layout/head-view.js';
export { heatmapLayout, matrixGridLayout, type GridLayout } from './views/layout/heatmap.js';
export { modelViewLayout, type ModelViewLayout, type ModelCell } from './views/layout/model-view.js';
export { neuronViewLayout, type NeuronLayout } from './views/layout/neuron-view.js';
export { renderFlowView, renderInfluenceTree, type FlowViewOptions, type FlowMethod } from './views/svg/flow.js';
export { flowLayout, flowModel, flowMass, type FlowLayout, type FlowModel, type FlowEdge } from './views/layout/flow.js';
export { influenceTreeLayout, type TreeLayout, type TreeNode } from './views/layout/influence-tree.js';
export { renderHeadClusters, renderClusterScatter, type HeadClustersOptions } from './views/svg/head-clusters.js';
export { headClustersLayout, headClusteringOf, type HeadClustersLayout, type ClusterPoint } from './views/layout/head-clusters.js';
export { renderGroupedHeatmap, type GroupedHeatmapOptions, type GroupBy, type GroupCellRule } from './views/svg/grouped-heatmap.js';
export { groupedHeatmapModel, groupedHeatmapLayout, groupedDrill, drillLayout, type GroupedModel } from './views/layout/grouped-heatmap.js';
export { renderHeadTypes, renderHeadTypeGrid, type HeadTypesOptions } from './views/svg/head-types.js';
export { headTypesLayout, headTypesTableOf, HEAD_TYPE_COLORS, type HeadTypesLayout, type TypeCell } from './views/layout/head-types.js';
export { renderSaliency, renderHeadImportance, renderAblation, renderLogitLens, renderAnalysisSvg, analysisTitle, type AnalysisSvgOptions } from './views/svg/analysis-views.js';
export { saliencyLayout, type SaliencyData, type SaliencyRow, type SaliencyLayout } from './views/layout/saliency.js';
export { headImportanceLayout, type HeadImportanceData, type HeadImportanceLayout } from './views/layout/head-importance.js';
export { ablationLayout, type AblationData, type AblationLayout } from './views/layout/ablation.js';
export { logitLensLayout, type LogitLensData, type LogitLensLayout } from './views/layout/logit-lens.js';
export { ANALYSIS_VIEW_NAMES, type AnalysisViewName, type AnalysisViewData } from './views/layout/analysis-views.js';
export { analysisViewData, saliencyViewData, headImportanceViewData, logitLensViewData, ablationViewData, traceAttributions } from './views/analysis-data.js';
export type { Item, Picture } from './views/layout/common.js';
export { svgToPng, type PngOptions } from './views/png.js';
export { renderStandaloneHtml, type StandaloneOptions, type StandaloneResult, type ViewBundle } from './views/html/standalone.js';
export { loadViewBundle } from './views/html/bundle-node.js';
export { renderComparisonSvg, comparisonLayout, comparisonDiffInput, diffHeatmapLayout, pairLabel, type ComparisonFigureOptions, type DiffInput, type DiffLayout } from './views/svg/diff-heatmap.js';
export { renderComparePage, type ComparePageOptions, type ComparePageResult, type ComparePayload } from './views/html/compare-page.js';
export { prettifyTokens, displayStack, type DisplayStack, type DisplayToken } from './views/tokens.js';
export { scoreCrowsPairs, crowsMethodFor, type CrowsScoreRun, type CrowsMethod } from './bias/crows-pairs.js';
export { crowsPairRows, crowsPairsMetric, crowsScoresCsv, parseCrowsPairs, pyRound, type CrowsPair, type CrowsPairRow, type CrowsPairsMetric } from './analysis/bias/crows-pairs.js';
export { opcodes, matchingBlocks, sharedPositions, type Opcode } from './analysis/bias/sequence-matcher.js';
export { scorePronouns } from './bias/pronouns.js';
export { summarizeByOccupation, femaleShare, pearson, type PronounItem, type PronounResult, type OccupationSummary } from './analysis/bias/wino.js';
export { scoreStereoSet } from './bias/stereoset.js';
export { parseStereoSet, stereoSetResults, stereoSetScores, type StereoExample, type StereoResults, type StereoScores } from './analysis/bias/stereoset.js';
export { biasProbe, type BiasProbe } from './bias/probe.js';
export { counterfactual, findGroupWords, type Counterfactual, type GroupLexicon, type GroupMention } from './analysis/bias/groups.js';
export { headBiasScores, biasAttentionRatio, benjaminiHochberg, holm, type HeadBiasScore } from './analysis/bias/attention-bias.js';
export { loadCrowsPairs, loadWinogender, loadWinobias, loadOccupationStats, loadGroupLexicons } from './bias/data-files.js';
export { occupationPlotSvg } from './bias/occupation-plot.js';
export { biasHeads, crowsHeads, crowsHeadRatios, contrastTarget, contrastAblations, type BiasHeadsOptions, type BiasHeadsResult, type CrowsHeadsOptions, type CrowsHeadsResult, type ContrastTarget } from './bias/heads.js';
export { spearman, topBiasHeads, randomHeadSets, layerPropagation, attentionAttributionAgreement, type BiasHead, type LayerPropagation, type Faithfulness, type HeadFaithfulness } from './analysis/bias/heads.js';
export { bootstrapMean, crowsIntervals, type Interval, type CrowsIntervals } from './analysis/bias/bootstrap.js';
export { buildBiasReport, defaultProbeTexts, type BiasReportOptions } from './bias/report.js';
export { biasReportJson, BIAS_REPORT_FORMAT, type BiasReport } from './analysis/bias/report.js';
export { biasReportPanels, scoresLayout, occupationsLayout, headsLayout, propagationLayout, BIAS_PANELS, type BiasPanelName } from './views/layout/bias-report.js';
export { renderBiasPanel, renderBiasPanels } from './views/svg/bias-report.js';
export { renderBiasReportPage, type BiasReportPageOptions } from './views/html/bias-report.js';
