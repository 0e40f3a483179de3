import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Arn,
  ArnFormat,
  aws_certificatemanager as acm,
  aws_apigateway as apigw,
  type CfnElement,
  CfnOutput,
  aws_cloudwatch as cloudwatch,
  aws_cloudwatch_actions as cloudwatchActions,
  Duration,
  aws_dynamodb as dynamodb,
  aws_events as events,
  aws_iam as iam,
  aws_lambda as lambda,
  aws_logs as logs,
  aws_lambda_nodejs as nodejs,
  RemovalPolicy,
  aws_route53 as route53,
  aws_route53_targets as route53Targets,
  Stack,
  type StackProps,
  aws_s3 as s3,
  aws_sns as sns,
  aws_events_targets as targets,
  Validations,
} from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { TTL_ATTRIBUTE, tableDefinition } from '../../src/stores/dynamodb/table-definition.ts';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Lambda unpacks the bundle here; the catalog and sample assets are copied beside it. */
const TASK_ROOT = '/var/task';

/** Objects the gateway stores live under this prefix; the expiry rule matches it. */
const S3_PREFIX = 'videos-store';

/** A literal, not the Stage's Ref: the function's environment would otherwise depend on
 * the stage that depends on the function. */
const STAGE_NAME = 'prod';

export interface ReelpostlyStackProps extends StackProps {
  /** SSM path whose parameters become environment variables at cold start. */
  ssmPrefix?: string;
  /** Customer-managed KMS key of the SecureString parameters; unset means `aws/ssm`. */
  ssmKmsKeyArn?: string;
  /** Stored videos (and thumbnails) are deleted this many days after they were written. */
  videoRetentionDays?: number;
  /** Stage-wide steady-state requests per second (per-tenant limits live in the app). */
  throttlingRateLimit?: number;
  throttlingBurstLimit?: number;
  /** Browser origins allowed by CORS, for the preflight and the app alike. */
  corsOrigins?: string[];
  /** Custom domain: created only when both the name and a regional ACM certificate are given. */
  domainName?: string;
  certificateArn?: string;
  /** With a hosted zone, an alias A record for `domainName` is created in it. */
  hostedZoneId?: string;
  hostedZoneName?: string;
  /** SNS topic the alarms notify; alarms are created without actions when unset. */
  alarmTopicArn?: string;
  /** Longest one scheduled worker invocation keeps ticking. */
  workerBudgetMs?: number;
}

export const DEFAULTS = {
  ssmPrefix: '/reelpostly',
  videoRetentionDays: 90,
  throttlingRateLimit: 50,
  throttlingBurstLimit: 100,
  workerBudgetMs: 60_000,
} as const;

/**
 * The gateway on AWS: one DynamoDB table, one bucket, the HTTP function behind a REST
 * API, and the worker function ticked every minute by EventBridge.
 */
export class ReelpostlyStack extends Stack {
  readonly table: dynamodb.Table;
  readonly bucket: s3.Bucket;
  readonly httpFunction: nodejs.NodejsFunction;
  readonly workerFunction: nodejs.NodejsFunction;
  readonly api: apigw.LambdaRestApi;

  constructor(scope: Construct, id: string, props: ReelpostlyStackProps = {}) {
    super(scope, id, props);
    const ssmPrefix = `/${(props.ssmPrefix ?? DEFAULTS.ssmPrefix).replace(/^\/+|\/+$/g, '')}`;
    const corsOrigins = props.corsOrigins ?? apigw.Cors.ALL_ORIGINS;

    this.table = createTable(this);
    this.bucket = new s3.Bucket(this, 'VideoBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [
        { id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) },
        {
          id: 'expire-videos',
          prefix: `${S3_PREFIX}/`,
          expiration: Duration.days(props.videoRetentionDays ?? DEFAULTS.videoRetentionDays),
        },
      ],
    });

    const environment = {
      REELPOSTLY_STORE: 'dynamodb',
      REELPOSTLY_DYNAMODB_TABLE: this.table.tableName,
      REELPOSTLY_BLOBS: 's3',
      REELPOSTLY_S3_BUCKET: this.bucket.bucketName,
      REELPOSTLY_S3_PREFIX: S3_PREFIX,
      REELPOSTLY_SSM_PREFIX: ssmPrefix,
      REELPOSTLY_DATA_DIR: '/tmp/reelpostly',
      REELPOSTLY_CATALOG: `${TASK_ROOT}/config/catalog.json`,
      REELPOSTLY_ASSETS_DIR: `${TASK_ROOT}/assets`,
      REELPOSTLY_CORS_ORIGINS: corsOrigins.join(','),
      REELPOSTLY_DEMO: 'false',
      REELPOSTLY_WORKER: 'false',
      NODE_OPTIONS: '--enable-source-maps',
    };
    this.httpFunction = this.gatewayFunction('Http', {
      handler: 'http',
      timeout: Duration.seconds(29),
      environment,
    });
    this.workerFunction = this.gatewayFunction('Worker', {
      handler: 'worker',
      timeout: Duration.seconds(90),
      environment: {
        ...environment,
        REELPOSTLY_WORKER_BUDGET_MS: String(props.workerBudgetMs ?? DEFAULTS.workerBudgetMs),
      },
    });
    for (const fn of [this.httpFunction, this.workerFunction]) {
      this.grantGateway(fn, ssmPrefix, props.ssmKmsKeyArn);
    }

    this.api = this.createApi(props, corsOrigins);
    const publicUrl = props.domainName
      ? `https://${props.domainName}`
      : `https://${this.api.restApiId}.execute-api.${this.region}.${this.urlSuffix}/${STAGE_NAME}`;
    for (const fn of [this.httpFunction, this.workerFunction]) {
      fn.addEnvironment('REELPOSTLY_PUBLIC_URL', publicUrl);
    }

    new events.Rule(this, 'WorkerSchedule', {
      description: 'Advances ReelPostly jobs: one worker invocation a minute',
      schedule: events.Schedule.rate(Duration.minutes(1)),
      targets: [new targets.LambdaFunction(this.workerFunction, { retryAttempts: 0 })],
    });

    this.createMonitoring(props.alarmTopicArn);

    new CfnOutput(this, 'ApiUrl', { value: publicUrl });
    new CfnOutput(this, 'TableName', { value: this.table.tableName });
    new CfnOutput(this, 'BucketName', { value: this.bucket.bucketName });
    new CfnOutput(this, 'WorkerFunctionName', { value: this.workerFunction.functionName });
    this.acknowledgeNagFindings();
  }

  private gatewayFunction(
    id: string,
    options: { handler: 'http' | 'worker'; timeout: Duration; environment: Record<string, string> },
  ): nodejs.NodejsFunction {
    const logGroup = new logs.LogGroup(this, `${id}Logs`, {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // Our own role instead of AWSLambdaBasicExecutionRole: that managed policy writes to
    // every log group in the account; this one can write only to its function's.
    const role = new iam.Role(this, `${id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    });
    logGroup.grantWrite(role);
    return new nodejs.NodejsFunction(this, id, {
      entry: resolve(REPO_ROOT, 'src/main/lambda.ts'),
      handler: options.handler,
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: 1024,
      timeout: options.timeout,
      role,
      logGroup,
      environment: options.environment,
      projectRoot: REPO_ROOT,
      depsLockFilePath: resolve(REPO_ROOT, 'package-lock.json'),
      bundling: {
        forceDockerBundling: false,
        format: nodejs.OutputFormat.ESM,
        target: 'node22',
        mainFields: ['module', 'main'],
        minify: true,
        sourceMap: true,
        banner:
          "import { createRequire } from 'module'; const require = createRequire(import.meta.url);",
        // The AWS SDK is bundled, not taken from the runtime: the version we test is the
        // version that runs.
        externalModules: [],
        esbuildArgs: {
          '--alias:better-sqlite3': resolve(REPO_ROOT, 'infra/lambda/better-sqlite3-stub.ts'),
        },
        commandHooks: {
          beforeBundling: () => [],
          beforeInstall: () => [],
          afterBundling: (inputDir: string, outputDir: string) => [
            `mkdir -p "${outputDir}/config"`,
            `cp "${inputDir}/config/catalog.json" "${outputDir}/config/catalog.json"`,
            `cp -R "${inputDir}/assets" "${outputDir}/assets"`,
          ],
        },
      },
    });
  }

  /** Exactly what the code calls, on exactly this stack's resources. */
  private grantGateway(fn: lambda.Function, ssmPrefix: string, ssmKmsKeyArn?: string): void {
    this.table.grantReadWriteData(fn);
    // `migrate()` checks the table's TTL setting at cold start.
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['dynamodb:DescribeTimeToLive'],
        resources: [this.table.tableArn],
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'],
        resources: [this.bucket.arnForObjects(`${S3_PREFIX}/*`)],
      }),
    );
    // HeadBucket (health check) and a 404 rather than 403 for a missing object.
    fn.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [this.bucket.bucketArn] }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['ssm:GetParametersByPath'],
        resources: [
          Arn.format(
            {
              service: 'ssm',
              resource: 'parameter',
              resourceName: ssmPrefix.slice(1),
              arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
            },
            this,
          ),
        ],
      }),
    );
    // The AWS-managed `aws/ssm` key's own policy lets every principal in the account
    // decrypt through SSM, so only a customer-managed key needs a grant.
    if (ssmKmsKeyArn) {
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['kms:Decrypt'],
          resources: [ssmKmsKeyArn],
          conditions: { StringEquals: { 'kms:ViaService': `ssm.${this.region}.amazonaws.com` } },
        }),
      );
    }
  }

  private createApi(props: ReelpostlyStackProps, corsOrigins: string[]): apigw.LambdaRestApi {
    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', {
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const domain =
      props.domainName && props.certificateArn
        ? {
            domainName: props.domainName,
            certificate: acm.Certificate.fromCertificateArn(
              this,
              'Certificate',
              props.certificateArn,
            ),
            endpointType: apigw.EndpointType.REGIONAL,
            securityPolicy: apigw.SecurityPolicy.TLS_1_2,
          }
        : undefined;
    const api = new apigw.LambdaRestApi(this, 'Api', {
      handler: this.httpFunction,
      proxy: true,
      description: 'ReelPostly video generation gateway',
      endpointTypes: [apigw.EndpointType.REGIONAL],
      // Videos and thumbnails come back from Lambda base64-encoded; `*/*` makes API
      // Gateway return them as bytes and pass multipart uploads through untouched.
      binaryMediaTypes: ['*/*'],
      // Execution logging needs the account-wide API Gateway CloudWatch role, which one
      // app's stack should not own; the JSON access log records every request.
      cloudWatchRole: false,
      defaultCorsPreflightOptions: {
        allowOrigins: corsOrigins,
        allowMethods: apigw.Cors.ALL_METHODS,
        allowHeaders: [...apigw.Cors.DEFAULT_HEADERS, 'x-api-key', 'Idempotency-Key'],
        exposeHeaders: ['x-request-id', 'Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining'],
        maxAge: Duration.hours(1),
      },
      deployOptions: {
        stageName: STAGE_NAME,
        throttlingRateLimit: props.throttlingRateLimit ?? DEFAULTS.throttlingRateLimit,
        throttlingBurstLimit: props.throttlingBurstLimit ?? DEFAULTS.throttlingBurstLimit,
        metricsEnabled: true,
        accessLogDestination: new apigw.LogGroupLogDestination(accessLogs),
        accessLogFormat: apigw.AccessLogFormat.jsonWithStandardFields(),
      },
      domainName: domain,
    });
    // With `*/*` binary, the mock preflight's request counts as binary and its JSON
    // template never applies (every OPTIONS answers 500) unless it is read as text.
    for (const child of api.node.findAll()) {
      if (child instanceof apigw.CfnMethod && child.httpMethod === 'OPTIONS') {
        child.addPropertyOverride('Integration.ContentHandling', 'CONVERT_TO_TEXT');
      }
    }
    if (domain && props.hostedZoneId && props.hostedZoneName) {
      const zone = route53.HostedZone.fromHostedZoneAttributes(this, 'Zone', {
        hostedZoneId: props.hostedZoneId,
        zoneName: props.hostedZoneName,
      });
      new route53.ARecord(this, 'ApiAlias', {
        zone,
        recordName: domain.domainName,
        target: route53.RecordTarget.fromAlias(new route53Targets.ApiGateway(api)),
      });
    }
    return api;
  }

  private createMonitoring(alarmTopicArn?: string): void {
    const minute = Duration.minutes(1);
    const fiveMinutes = Duration.minutes(5);
    const tableThrottles = new cloudwatch.MathExpression({
      label: 'DynamoDB throttled requests',
      expression: 'reads + writes',
      usingMetrics: {
        reads: this.table.metric('ReadThrottleEvents', { statistic: 'Sum', period: fiveMinutes }),
        writes: this.table.metric('WriteThrottleEvents', { statistic: 'Sum', period: fiveMinutes }),
      },
      period: fiveMinutes,
    });
    const alarms = [
      this.api
        .metricServerError({ period: fiveMinutes, statistic: 'Sum' })
        .createAlarm(this, 'Api5xxAlarm', {
          alarmDescription: 'The API answered 5XX (gateway or function failures)',
          threshold: 5,
          evaluationPeriods: 1,
        }),
      this.workerFunction.metricErrors({ period: fiveMinutes }).createAlarm(this, 'WorkerErrors', {
        alarmDescription: 'Worker invocations failed: jobs are not advancing',
        threshold: 1,
        evaluationPeriods: 2,
      }),
      this.httpFunction.metricErrors({ period: fiveMinutes }).createAlarm(this, 'HttpErrors', {
        alarmDescription: 'HTTP function invocations failed (cold start or crash)',
        threshold: 1,
        evaluationPeriods: 1,
      }),
      ...[this.httpFunction, this.workerFunction].map((fn, i) =>
        fn
          .metricThrottles({ period: fiveMinutes })
          .createAlarm(this, `${i === 0 ? 'Http' : 'Worker'}Throttles`, {
            alarmDescription: 'Lambda throttled invocations: raise the concurrency limit',
            threshold: 1,
            evaluationPeriods: 1,
          }),
      ),
      tableThrottles.createAlarm(this, 'TableThrottles', {
        alarmDescription: 'DynamoDB throttled reads or writes',
        threshold: 1,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    ];
    if (alarmTopicArn) {
      const topic = sns.Topic.fromTopicArn(this, 'AlarmTopic', alarmTopicArn);
      for (const alarm of alarms) alarm.addAlarmAction(new cloudwatchActions.SnsAction(topic));
    }

    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      defaultInterval: Duration.hours(3),
    });
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'API requests and errors',
        left: [
          this.api.metricCount({ period: minute }),
          this.api.metricClientError({ period: minute }),
          this.api.metricServerError({ period: minute }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'API latency (ms)',
        left: [
          this.api.metricLatency({ period: minute, statistic: 'p50' }),
          this.api.metricLatency({ period: minute, statistic: 'p99' }),
          this.api.metricIntegrationLatency({ period: minute, statistic: 'p99' }),
        ],
      }),
    );
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Worker invocations, errors, throttles',
        left: [
          this.workerFunction.metricInvocations({ period: fiveMinutes }),
          this.workerFunction.metricErrors({ period: fiveMinutes }),
          this.workerFunction.metricThrottles({ period: fiveMinutes }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'Worker duration (ms)',
        left: [
          this.workerFunction.metricDuration({ period: fiveMinutes, statistic: 'Average' }),
          this.workerFunction.metricDuration({ period: fiveMinutes, statistic: 'Maximum' }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'DynamoDB throttles',
        left: [tableThrottles],
      }),
    );
  }

  /** cdk-nag findings this design accepts, each with its reason. */
  private acknowledgeNagFindings(): void {
    const logicalId = (construct: Construct) =>
      this.getLogicalId(construct.node.defaultChild as CfnElement);
    const acknowledged: Record<string, string> = {
      'AwsSolutions-L1':
        'Node.js 22 is the Lambda runtime the gateway is built and tested for (ARCHITECTURE.md).',
      'AwsSolutions-S1':
        'Objects are only read through presigned URLs the gateway logs issuing; S3 server ' +
        'access logs would need a second bucket for little extra audit value.',
      'AwsSolutions-APIG2':
        'Requests are validated by the application (TypeBox schemas) behind a {proxy+} route.',
      'AwsSolutions-APIG4':
        "Authorization is the gateway's own tenant API keys (x-api-key / Bearer), checked in the function.",
      'AwsSolutions-COG4': 'No Cognito: tenants authenticate with API keys issued by the gateway.',
      'AwsSolutions-APIG3':
        'No WAF by default (a web ACL costs a monthly fee plus per request): stage throttling ' +
        'and per-key GCRA limits in the app bound abuse; associate a web ACL if needed.',
      'AwsSolutions-APIG6':
        'Execution logging needs the account-wide API Gateway CloudWatch role; every request ' +
        'is in the JSON access log and the function logs.',
      [`AwsSolutions-IAM5[Resource::<${logicalId(this.table)}.Arn>/index/*]`]:
        "Query on the table's own GSIs (tenant collections, global lists, due jobs).",
      [`AwsSolutions-IAM5[Resource::<${logicalId(this.bucket)}.Arn>/${S3_PREFIX}/*]`]: `Objects are named per job under ${S3_PREFIX}/; the grant stops at that prefix.`,
    };
    for (const [id, reason] of Object.entries(acknowledged)) {
      Validations.of(this).acknowledge({ id, reason });
    }
  }
}

/** The table exactly as `tableDefinition()` describes it, so infra and `migrate()` agree. */
function createTable(scope: Construct): dynamodb.Table {
  const definition = tableDefinition('unused');
  const types = new Map(
    (definition.AttributeDefinitions ?? []).map((a) => [a.AttributeName, a.AttributeType]),
  );
  const attribute = (name: string | undefined): dynamodb.Attribute => {
    const type = name ? types.get(name) : undefined;
    if (!name || !type) throw new Error(`table definition: no attribute type for ${name}`);
    const kinds = {
      S: dynamodb.AttributeType.STRING,
      N: dynamodb.AttributeType.NUMBER,
      B: dynamodb.AttributeType.BINARY,
    };
    return { name, type: kinds[type] };
  };
  const keyOf = (schema: { AttributeName?: string; KeyType?: string }[] | undefined) => ({
    partitionKey: attribute(schema?.find((k) => k.KeyType === 'HASH')?.AttributeName),
    sortKey: attribute(schema?.find((k) => k.KeyType === 'RANGE')?.AttributeName),
  });

  const table = new dynamodb.Table(scope, 'VideosTable', {
    ...keyOf(definition.KeySchema),
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    timeToLiveAttribute: TTL_ATTRIBUTE,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  for (const index of definition.GlobalSecondaryIndexes ?? []) {
    if (!index.IndexName || index.Projection?.ProjectionType !== 'ALL') {
      throw new Error(`table definition: unsupported index ${index.IndexName}`);
    }
    table.addGlobalSecondaryIndex({
      indexName: index.IndexName,
      ...keyOf(index.KeySchema),
      projectionType: dynamodb.ProjectionType.ALL,
    });
  }
  return table;
}
