-- Micro-batching: the images per forward + backward pass the run's planner chose so that a step
-- fits the backend's memory (below spec.hyperparameters.batchSize, each step summed the gradients
-- of several micro-batches). Null until a run has trained, and for prototype jobs.

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "microBatchSize" INTEGER;
