-- Batch predictions: a model run by the workers over every image of a dataset. The results
-- (JSON Lines) are in S3 at batch-predictions/<id>/results.jsonl; the row is the status users read.
-- Deleting the model or the dataset keeps the row (and its results) with the reference set null.

-- CreateEnum
CREATE TYPE "BatchPredictionStatus" AS ENUM ('queued', 'running', 'succeeded', 'failed');

-- CreateTable
CREATE TABLE "batch_predictions" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "modelId" UUID,
    "datasetId" UUID,
    "status" "BatchPredictionStatus" NOT NULL DEFAULT 'queued',
    "total" INTEGER NOT NULL DEFAULT 0,
    "done" INTEGER NOT NULL DEFAULT 0,
    "failed" INTEGER NOT NULL DEFAULT 0,
    "runs" INTEGER NOT NULL DEFAULT 0,
    "leaseToken" UUID,
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "startedAt" TIMESTAMP(3),
    "finishedAt" TIMESTAMP(3),

    CONSTRAINT "batch_predictions_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "batch_predictions_tenantId_createdAt_id_idx" ON "batch_predictions"("tenantId", "createdAt", "id");

-- AddForeignKey
ALTER TABLE "batch_predictions" ADD CONSTRAINT "batch_predictions_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "tenants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "batch_predictions" ADD CONSTRAINT "batch_predictions_modelId_fkey" FOREIGN KEY ("modelId") REFERENCES "models"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "batch_predictions" ADD CONSTRAINT "batch_predictions_datasetId_fkey" FOREIGN KEY ("datasetId") REFERENCES "datasets"("id") ON DELETE SET NULL ON UPDATE CASCADE;
