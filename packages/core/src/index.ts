export * from './errors.ts';
export * from './base-models.ts';
export * from './job-spec.ts';
export * from './config.ts';
export * from './job-status.ts';
export * from './transient.ts';
export * from './best-epoch.ts';
export * from './quotas.ts';
