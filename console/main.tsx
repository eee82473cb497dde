import { options, render, type VNode } from 'preact';
import { App } from './app';
import { withoutHiddenCharacters } from './format';

// Every text the page draws, and every tooltip, without bidirectional controls or invisible characters (see withoutHiddenCharacters):
// here once, so no view can forget it. A text node is a vnode of type null whose props are its text.
const created = options.vnode;
options.vnode = (vnode: VNode<unknown>) => {
  const node = vnode as unknown as { type: unknown; props: unknown };
  if (node.type === null && typeof node.props === 'string') node.props = withoutHiddenCharacters(node.props);
  else if (node.props !== null && typeof node.props === 'object') {
    const props = node.props as { title?: unknown };
    if (typeof props.title === 'string') props.title = withoutHiddenCharacters(props.title);
  }
  created?.(vnode);
};

render(<App />, document.getElementById('app')!);
