// Worker thread entry: registers the TypeScript loader, then starts the pipeline worker.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
