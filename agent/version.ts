/** Replaced at bundle time (esbuild define); the source tree reads package.json's version. */
declare const __VWS_VERSION__: string | undefined;
export const VERSION: string = typeof __VWS_VERSION__ === 'string' ? __VWS_VERSION__ : '0.0.0-dev';
