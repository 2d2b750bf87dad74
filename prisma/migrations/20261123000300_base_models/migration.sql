-- Custom base models: a tenant's own TensorFlow.js layers model (uploaded as a zip, or fetched by
-- a worker from a URL), validated before it can be used. Its files are in S3 under
-- base-models/<id>/ (model.json + one weights.bin); the row is what users list.

-- CreateEnum
CREATE TYPE "BaseModelStatus" AS ENUM ('pending', 'validating', 'ready', 'failed');

-- CreateTable
CREATE TABLE "base_models" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "status" "BaseModelStatus" NOT NULL DEFAULT 'pending',
    "source" TEXT NOT NULL,
    "url" TEXT,
    "inputSize" INTEGER,
    "embeddingLayer" TEXT NOT NULL,
    "scale" TEXT NOT NULL,
    "embeddingSize" INTEGER,
    "pooled" BOOLEAN NOT NULL DEFAULT false,
    "layerCount" INTEGER,
    "storagePrefix" TEXT NOT NULL,
    "sizeBytes" BIGINT NOT NULL DEFAULT 0,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "readyAt" TIMESTAMP(3),

    CONSTRAINT "base_models_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "base_models_tenantId_createdAt_id_idx" ON "base_models"("tenantId", "createdAt", "id");

-- AddForeignKey
ALTER TABLE "base_models" ADD CONSTRAINT "base_models_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "tenants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
