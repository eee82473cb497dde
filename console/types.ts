/*
 * The parts of Herald's API answers the console reads: the types generated from openapi/openapi.yaml
 * (`npm run generate:api-types`, shared with the CLI), so the page and the contract cannot drift apart.
 */
import type { components } from '../src/client/herald-api';

type Schemas = components['schemas'];

export type PartitionInfo = Schemas['PartitionList']['partitions'][number];
export type Readiness = Schemas['Readiness'];
export type CloudEvent = Schemas['CloudEvent'];
export type StoredEvent = Schemas['StoredEvent'];
export type AppendResult = Schemas['AppendResult'];
export type PartitionDeliveryStats = Schemas['PartitionDeliveryStats'];
export type SubscriptionStats = Schemas['SubscriptionStats'];
export type Subscription = Schemas['Subscription'] & { secret?: string };
export type SubscriptionPage = Schemas['SubscriptionList'];
export type SubscriptionState = Subscription['state'];
export type DeadLetter = Schemas['DeadLetter'];
export type DeadLetterPage = Schemas['DeadLetterPage'];
export type Attempt = Schemas['Attempt'];
export type AttemptPage = Schemas['AttemptPage'];
