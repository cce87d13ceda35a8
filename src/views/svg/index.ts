/**
 * The SVG renderers, and one entry point that picks a view by name.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import { type ViewName, VIEW_NAMES } from '../layout/common.js';
import type { Trace } from '../../core/trace.js';
import { type HeadViewOptions, renderHeadView } from './head-view.js';
import { type HeatmapOptions, renderHeatmap } from './heatmap.js';
import { type ModelViewOptions, renderModelView } from './model-view.js';
import { type NeuronViewOptions, renderNeuronView } from './neuron-view.js';
import { type FlowViewOptions, renderFlowView, renderInfluenceTree } from './flow.js';
import { type HeadClustersOptions, renderHeadClusters } from './head-clusters.js';
import { type HeadTypesOptions, renderHeadTypes } from './head-types.js';
import { type GroupedHeatmapOptions, renderGroupedHeatmap } from './grouped-heatmap.js';

export { renderHeadView, headViewModel, type HeadViewOptions, type HeadViewModel } from './head-view.js';
export { renderModelView, paintModelView, type ModelViewOptions } from './model-view.js';
export { renderNeuronView, paintNeuronView, neuronData, keyHeadFor, type NeuronViewOptions, type NeuronData } from './neuron-view.js';
export { modelViewLayout, strongestPairs, type ModelViewLayout, type ModelCell, type CellPair } from '../layout/model-view.js';
export { neuronViewLayout, type NeuronLayout, type NeuronLayoutOptions } from '../layout/neuron-view.js';
export { renderHeatmap, heatmapMatrix, type HeatmapOptions, type HeatmapAggregate } from './heatmap.js';
export { renderFlowView, renderInfluenceTree, type FlowViewOptions, type FlowMethod } from './flow.js';
export { renderHeadClusters, type HeadClustersOptions } from './head-clusters.js';
export { renderHeadTypes, renderHeadTypeGrid, type HeadTypesOptions } from './head-types.js';
export { renderGroupedHeatmap, type GroupedHeatmapOptions, type GroupBy, type GroupCellRule } from './grouped-heatmap.js';
export { type CommonViewOptions } from './common.js';
export { encodePng, pngDataUri, matrixDataUri, matrixPixels, base64 } from './image.js';

export { type ViewName, VIEW_NAMES } from '../layout/common.js';

export type AnyViewOptions = HeadViewOptions & ModelViewOptions & NeuronViewOptions & HeatmapOptions & FlowViewOptions & HeadClustersOptions & HeadTypesOptions & Omit<GroupedHeatmapOptions, 'by'>;

/** Renders a view by name as a standalone SVG document. */
export function renderSvg(view: ViewName | string, trace: Trace, options: AnyViewOptions = {}): string {
  switch (view) {
    case 'head':
      return renderHeadView(trace, options);
    case 'model':
      return renderModelView(trace, options);
    case 'neuron':
      return renderNeuronView(trace, options);
    case 'heatmap':
      return renderHeatmap(trace, options);
    case 'flow':
      return renderFlowView(trace, options);
    case 'influence':
      return renderInfluenceTree(trace, options);
    case 'clusters':
      return renderHeadClusters(trace, options);
    case 'types':
      return renderHeadTypes(trace, options);
    case 'words':
    case 'sentences':
      return renderGroupedHeatmap(trace, { ...options, by: view });
    default:
      throw new AttnscopeError(`unknown view '${view}' (expected ${VIEW_NAMES.join(', ')})`);
  }
}
